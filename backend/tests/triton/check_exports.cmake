cmake_minimum_required(VERSION 3.22)
# Fails unless the library's dynamic symbol table defines only TRITONBACKEND_*
# functions (the version script hides the engine and its dependencies), and
# all the entry points Triton needs are there.
execute_process(COMMAND nm -D --defined-only ${LIBRARY}
                OUTPUT_VARIABLE symbols RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "nm failed on ${LIBRARY}")
endif()
string(REPLACE "\n" ";" lines "${symbols}")
set(exported "")
foreach(line IN LISTS lines)
  if(line MATCHES "^[0-9a-fA-F]+ [A-Za-z] ([^ ]+)$")
    set(name "${CMAKE_MATCH_1}")
    if(NOT name MATCHES "^TRITONBACKEND_")
      message(FATAL_ERROR "${LIBRARY} exports ${name}")
    endif()
    list(APPEND exported "${name}")
  endif()
endforeach()
foreach(entry TRITONBACKEND_Initialize TRITONBACKEND_Finalize TRITONBACKEND_ModelInitialize
              TRITONBACKEND_ModelFinalize TRITONBACKEND_ModelInstanceInitialize
              TRITONBACKEND_ModelInstanceFinalize TRITONBACKEND_ModelInstanceExecute)
  if(NOT entry IN_LIST exported)
    message(FATAL_ERROR "${LIBRARY} does not export ${entry}")
  endif()
endforeach()
list(LENGTH exported count)
message(STATUS "${LIBRARY} exports ${count} symbols, all TRITONBACKEND_*")
