#include "cli.h"
int cmd_install(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 2;
}
