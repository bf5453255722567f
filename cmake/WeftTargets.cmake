# SPDX-License-Identifier: MIT
# cmake/WeftTargets.cmake: weft_target_defaults(<target>) applies the
# project's language level, warnings and sanitizer flags to one target.
# Every folder (lib, tests, samples, bench) calls it on the targets it makes.

function(weft_target_defaults target)
  get_target_property(_type ${target} TYPE)
  set_target_properties(${target} PROPERTIES C_STANDARD 11
                                             C_STANDARD_REQUIRED ON
                                             C_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wpedantic -Werror>)
  if(WEFT_SANITIZE)
    set(_san -fsanitize=${WEFT_SANITIZE} -fno-omit-frame-pointer -g)
    if(WEFT_SANITIZE MATCHES "undefined")
      list(APPEND _san -fno-sanitize-recover=all)
    endif()
    target_compile_options(${target} PRIVATE ${_san})
    if(NOT _type STREQUAL "OBJECT_LIBRARY" AND NOT _type STREQUAL "STATIC_LIBRARY")
      target_link_options(${target} PRIVATE -fsanitize=${WEFT_SANITIZE})
    endif()
  endif()
endfunction()
