// SwiftPM links every executable on Linux with `main` aliased to `<module>_main`, so libFuzzer's
// own `main` is never used. These stand in for it: each hands the command line to libFuzzer's
// driver with the executable's `LLVMFuzzerTestOneInput`.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ENTRY(name) \
    int name##_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }

FUZZ_ENTRY(FuzzRelayDirection)
FUZZ_ENTRY(FuzzRelay)
FUZZ_ENTRY(FuzzRequestHead)
FUZZ_ENTRY(FuzzResponse)
FUZZ_ENTRY(FuzzConfig)
FUZZ_ENTRY(FuzzAuth)
FUZZ_ENTRY(FuzzProxyHeader)
FUZZ_ENTRY(FuzzRESP)
FUZZ_ENTRY(FuzzHTTP2Frames)
