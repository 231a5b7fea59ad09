/* fuzz.h - the fuzz targets' entry points.
 *
 * Each fuzz/fuzz_NAME.c defines fuzz_NAME(), which runs one input through
 * the code under test and checks what must hold for any input, aborting
 * when it does not. Built with -DFUZZ_ENTRY, the file also defines
 * LLVMFuzzerTestOneInput() for libFuzzer; tests/test_regress.c links the
 * same functions without it and replays the kept inputs in `make check`.
 */
#ifndef TH_FUZZ_H
#define TH_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* The daemon's input side: bytes arriving on a client socket, in chunks
 * whose sizes the input's first byte chooses, decoded frame by frame and
 * parsed as the server does. */
int fuzz_protocol(const uint8_t *data, size_t size);

/* config_load() of the bytes as a config file, then config_free(). */
int fuzz_config(const uint8_t *data, size_t size);

/* config_parse_size() and config_parse_duration() of the bytes as one
 * NUL-terminated string. */
int fuzz_size(const uint8_t *data, size_t size);

#endif /* TH_FUZZ_H */
