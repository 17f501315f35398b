# Writes INPUT's bytes as a NUL-terminated C++ string (const char* const SYMBOL in NAMESPACE) into
# OUTPUT, rewriting OUTPUT only when the content changed (the text counterpart of
# sandbox/embed_binary.cmake). Run with:
#   cmake -DINPUT=... -DOUTPUT=... -DSYMBOL=... -DNAMESPACE=... -P embed_text.cmake
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){24})" "\\1\n" bytes "${bytes}")
set(text "// Generated from ${INPUT} by trainer/embed_text.cmake; do not edit.
namespace ${NAMESPACE} {
namespace {
const char kText[] = {
${bytes}0x00};
}  // namespace
extern const char* const ${SYMBOL} = kText;
}  // namespace ${NAMESPACE}
")
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
  if(old STREQUAL text)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${text}")
