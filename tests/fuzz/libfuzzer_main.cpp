// libFuzzer driver: FT_FUZZ_FN (set per executable in tests/fuzz/CMakeLists.txt) is one of the entry
// points of tests/fuzz/fuzz_targets.h.
#include "tests/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return FT_FUZZ_FN(data, size); }
