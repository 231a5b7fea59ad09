/* fuzz_size.c - config_parse_size() and config_parse_duration().
 *
 * The input, cut at its first NUL, is parsed by both. What must hold: a
 * size that parses is the digits times its unit (checked again here
 * without the parser's own arithmetic); a duration that parses is finite
 * and not negative; a failure leaves the output untouched.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

#define check(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

/* The value of a parsed size, recomputed by long division: v is a valid
 * result for `text` only if dividing by the unit gives the digits. */
static void check_size(const char *text, uint64_t v)
{
    static const char units[] = "kmgt";
    size_t digits = strspn(text, "0123456789");
    const char *u = strchr(units, tolower((unsigned char)text[digits]));
    int shift = 0;

    check(digits > 0);
    if (text[digits] != '\0' && u != NULL)
        shift = 10 * (int)(u - units + 1);
    check(shift == 0 || (v & ((1ull << shift) - 1)) == 0);
    check(strtoull(text, NULL, 10) == v >> shift);
}

int fuzz_size(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    uint64_t bytes = 12345;
    double secs = -1;

    check(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    if (config_parse_size(text, &bytes) == 0)
        check_size(text, bytes);
    else
        check(bytes == 12345);
    if (config_parse_duration(text, &secs) == 0)
        check(isfinite(secs) && secs >= 0);
    else
        check(secs == -1);
    free(text);
    return 0;
}

#ifdef FUZZ_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_size(data, size);
}
#endif
