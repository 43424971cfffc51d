/* The config.json stubs diffusers and transformers need to load a
 * converted folder: the released models' values (SD1.5; SDXL base 1.0 and
 * refiner 1.0 as stabilityai publishes them). Included by diffusers.c only. */
#ifndef ST_DIFFUSERS_CONFIGS_H
#define ST_DIFFUSERS_CONFIGS_H

static const char sd1_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionPipeline\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"feature_extractor\": [null, null],\n"
    "  \"requires_safety_checker\": false,\n"
    "  \"safety_checker\": [null, null],\n"
    "  \"scheduler\": [\"diffusers\", \"PNDMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char sd1_unet_head[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": 8,\n"
    "  \"block_out_channels\": [320, 640, 1280, 1280],\n"
    "  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 768,\n"
    "  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": ";
/* in_channels here */
static const char sd1_unet_tail[] =
    ",\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 4,\n"
    "  \"sample_size\": 64,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
    "\"CrossAttnUpBlock2D\"]\n"
    "}\n";

static const char sd1_vae_config[] =
    "{\n"
    "  \"_class_name\": \"AutoencoderKL\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"in_channels\": 3,\n"
    "  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 512,\n"
    "  \"scaling_factor\": 0.18215,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char sd1_te_config[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"quick_gelu\",\n"
    "  \"hidden_size\": 768,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 3072,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 12,\n"
    "  \"num_hidden_layers\": 12,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 768,\n"
    "  \"torch_dtype\": \"float32\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char sd1_scheduler_head[] =
    "{\n"
    "  \"_class_name\": \"PNDMScheduler\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": ";
/* prediction_type here */
static const char sd1_scheduler_tail[] =
    ",\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"trained_betas\": null\n"
    "}\n";


static const char sdxl_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionXLPipeline\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"force_zeros_for_empty_prompt\": true,\n"
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char refiner_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionXLImg2ImgPipeline\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"force_zeros_for_empty_prompt\": false,\n"
    "  \"requires_aesthetics_score\": true,\n"
    "  \"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"],\n"
    "  \"text_encoder\": [null, null],\n"
    "  \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"],\n"
    "  \"tokenizer\": [null, null],\n"
    "  \"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char sdxl_unet_head[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [5, 10, 20],\n"
    "  \"block_out_channels\": [320, 640, 1280],\n"
    "  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 2048,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": ";
/* in_channels here */
static const char sdxl_unet_tail[] =
    ",\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 4,\n"
    "  \"projection_class_embeddings_input_dim\": 2816,\n"
    "  \"sample_size\": 128,\n"
    "  \"transformer_layers_per_block\": [1, 2, 10],\n"
    "  \"up_block_types\": [\"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"UpBlock2D\"],\n"
    "  \"use_linear_projection\": true\n"
    "}\n";

static const char refiner_unet_head[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"addition_embed_type\": \"text_time\",\n"
    "  \"addition_time_embed_dim\": 256,\n"
    "  \"attention_head_dim\": [6, 12, 24, 24],\n"
    "  \"block_out_channels\": [384, 768, 1536, 1536],\n"
    "  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 1280,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": ";
/* in_channels here */
static const char refiner_unet_tail[] =
    ",\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 4,\n"
    "  \"projection_class_embeddings_input_dim\": 2560,\n"
    "  \"sample_size\": 128,\n"
    "  \"transformer_layers_per_block\": 4,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
    "\"UpBlock2D\"],\n"
    "  \"use_linear_projection\": true\n"
    "}\n";

static const char sdxl_vae_config[] =
    "{\n"
    "  \"_class_name\": \"AutoencoderKL\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"block_out_channels\": [128, 256, 512, 512],\n"
    "  \"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\", "
    "\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],\n"
    "  \"force_upcast\": true,\n"
    "  \"in_channels\": 3,\n"
    "  \"latent_channels\": 4,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 1024,\n"
    "  \"scaling_factor\": 0.13025,\n"
    "  \"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\", \"UpDecoderBlock2D\", "
    "\"UpDecoderBlock2D\"]\n"
    "}\n";

static const char sdxl_te_config[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"quick_gelu\",\n"
    "  \"hidden_size\": 768,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 3072,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 12,\n"
    "  \"num_hidden_layers\": 12,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 768,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char sdxl_te2_config[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModelWithProjection\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"gelu\",\n"
    "  \"hidden_size\": 1280,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 5120,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 20,\n"
    "  \"num_hidden_layers\": 32,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 1280,\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

static const char sdxl_scheduler_head[] =
    "{\n"
    "  \"_class_name\": \"EulerDiscreteScheduler\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n"
    "  \"interpolation_type\": \"linear\",\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": ";
/* prediction_type here */
static const char sdxl_scheduler_tail[] =
    ",\n"
    "  \"sample_max_value\": 1.0,\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"timestep_spacing\": \"leading\",\n"
    "  \"trained_betas\": null,\n"
    "  \"use_karras_sigmas\": false\n"
    "}\n";

static const char sd2_model_index[] =
    "{\n"
    "  \"_class_name\": \"StableDiffusionPipeline\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"feature_extractor\": [null, null],\n"
    "  \"requires_safety_checker\": false,\n"
    "  \"safety_checker\": [null, null],\n"
    "  \"scheduler\": [\"diffusers\", \"DDIMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n"
    "}\n";

static const char sd2_unet_head[] =
    "{\n"
    "  \"_class_name\": \"UNet2DConditionModel\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": [5, 10, 20, 20],\n"
    "  \"block_out_channels\": [320, 640, 1280, 1280],\n"
    "  \"center_input_sample\": false,\n"
    "  \"cross_attention_dim\": 1024,\n"
    "  \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", "
    "\"CrossAttnDownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 1,\n"
    "  \"flip_sin_to_cos\": true,\n"
    "  \"freq_shift\": 0,\n"
    "  \"in_channels\": ";
/* in_channels here */
static const char sd2_unet_tail[] =
    ",\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-05,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 4,\n"
    "  \"sample_size\": 96,\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", "
    "\"CrossAttnUpBlock2D\"],\n"
    "  \"use_linear_projection\": true\n"
    "}\n";

/* OpenCLIP ViT-H as SD 2.x uses it: the penultimate layer's output, so 23
 * of its 24 layers (the 24th and text_projection are kept in the weights,
 * unused, for the way back). */
static const char sd2_te_config[] =
    "{\n"
    "  \"architectures\": [\"CLIPTextModel\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 0,\n"
    "  \"dropout\": 0.0,\n"
    "  \"eos_token_id\": 2,\n"
    "  \"hidden_act\": \"gelu\",\n"
    "  \"hidden_size\": 1024,\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 4096,\n"
    "  \"layer_norm_eps\": 1e-05,\n"
    "  \"max_position_embeddings\": 77,\n"
    "  \"model_type\": \"clip_text_model\",\n"
    "  \"num_attention_heads\": 16,\n"
    "  \"num_hidden_layers\": 23,\n"
    "  \"pad_token_id\": 1,\n"
    "  \"projection_dim\": 512,\n"
    "  \"torch_dtype\": \"float32\",\n"
    "  \"vocab_size\": 49408\n"
    "}\n";

/* DDIM as stabilityai/stable-diffusion-2-1 ships it; prediction_type from
 * the caller (identify's v-prediction verdict). */
static const char sd2_scheduler_head[] =
    "{\n"
    "  \"_class_name\": \"DDIMScheduler\",\n"
    "  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"beta_end\": 0.012,\n"
    "  \"beta_schedule\": \"scaled_linear\",\n"
    "  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n"
    "  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": ";
static const char sd2_scheduler_tail[] =
    ",\n"
    "  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n"
    "  \"steps_offset\": 1,\n"
    "  \"trained_betas\": null\n"
    "}\n";

#endif
