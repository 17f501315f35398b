# Writes INPUT's bytes as a C++ array (SYMBOL, SYMBOL + "Size") into OUTPUT, rewriting OUTPUT only
# when the content changed. Run with: cmake -DINPUT=... -DOUTPUT=... -DSYMBOL=... -P embed_binary.cmake
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n" bytes "${bytes}")
set(text "// Generated from ${INPUT} by sandbox/embed_binary.cmake; do not edit.
#include <cstddef>
namespace distil::sandbox::detail {
extern const unsigned char ${SYMBOL}[] = {
${bytes}
};
extern const std::size_t ${SYMBOL}Size = ${size};
}  // namespace distil::sandbox::detail
")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
  if(old STREQUAL text)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${text}")
