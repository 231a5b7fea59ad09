/* nosym.c - a shared object that is not a plugin: it exports a function
 * but no TH_PLUGIN_SYMBOL. The loader must refuse it, naming the symbol. */
#include <taskhost.h>

TH_EXPORT int nosym_answer(void);

int nosym_answer(void)
{
    return 42;
}
