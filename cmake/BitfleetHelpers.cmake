# Helpers that keep every folder's CMakeLists.txt short and uniform.

set(BITFLEET_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter)

# bitfleet_library(NAME SRCS ... DEPS ...): a static library rooted at the source tree, so
# includes read "core/status.h", "model/gguf/gguf.h", ...
function(bitfleet_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${BITFLEET_WARNINGS}>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# bitfleet_test(NAME SRCS ... DEPS ... LABELS ... [TIMEOUT s]): one GoogleTest binary, registered
# with CTest under the given labels. Tests run from the build tree; BITFLEET_SHARED_DIR points
# at ../shared (models, tokenizer vectors) so tests can find the assets or skip.
function(bitfleet_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  target_compile_options(${name} PRIVATE ${BITFLEET_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "BITFLEET_SHARED_DIR=${PROJECT_SOURCE_DIR}/../shared;BITFLEET_BIN=${PROJECT_BINARY_DIR}/bin/bitfleet"
    SKIP_RETURN_CODE 77)
endfunction()
