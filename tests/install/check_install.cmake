# Installs the build tree into a scratch prefix, then configures, builds and runs a separate
# project that uses find_package(sluice CONFIG REQUIRED).
file(REMOVE_RECURSE "${WORK_DIR}")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BINARY_DIR}" --prefix "${WORK_DIR}/prefix"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "cmake --install failed")
endif()
# The consumer is built with the same sanitizer as the tree under test (the tsan preset links a
# oneTBB built with ThreadSanitizer, which only instrumented programs can load).
set(flags "")
if(SANITIZE STREQUAL "address")
  set(flags "-fsanitize=address,undefined -fno-sanitize=vptr")
elseif(SANITIZE STREQUAL "thread")
  set(flags "-fsanitize=thread")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/install/consumer"
                  -B "${WORK_DIR}/build" -G "${GENERATOR}" -DCMAKE_CXX_COMPILER=${CXX}
                  "-DCMAKE_CXX_FLAGS=${flags}" "-DCMAKE_EXE_LINKER_FLAGS=${flags}"
                  "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix;${PREFIX_PATH}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer project failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer project failed")
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer_app" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(rc OR NOT out MATCHES "sum 4950")
  message(FATAL_ERROR "the consumer app failed: ${rc} ${out}")
endif()
message(STATUS "installed package works: ${out}")
