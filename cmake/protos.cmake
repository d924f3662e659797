# Generates protobuf-c code for every .proto under proto/ plus the well-known
# types legate uses, into ${CMAKE_BINARY_DIR}/proto-gen, and a registry of all
# message descriptors (for google.protobuf.Any type URLs).
set(PROTO_SRC_DIR ${CMAKE_SOURCE_DIR}/proto)
set(PROTO_GEN_DIR ${CMAKE_BINARY_DIR}/proto-gen)
find_path(PROTOBUF_WKT_DIR google/protobuf/any.proto PATHS /usr/include REQUIRED)

file(GLOB_RECURSE LEGATE_PROTOS RELATIVE ${PROTO_SRC_DIR} CONFIGURE_DEPENDS
     ${PROTO_SRC_DIR}/*.proto)
list(SORT LEGATE_PROTOS)
set(WKT_PROTOS google/protobuf/any.proto google/protobuf/duration.proto
    google/protobuf/wrappers.proto google/protobuf/struct.proto
    google/protobuf/empty.proto google/protobuf/timestamp.proto)

set(PROTO_GEN_SRCS)
set(PROTO_GEN_HDRS)
foreach(p IN LISTS LEGATE_PROTOS WKT_PROTOS)
  string(REGEX REPLACE "\\.proto$" "" stem ${p})
  list(APPEND PROTO_GEN_SRCS ${PROTO_GEN_DIR}/${stem}.pb-c.c)
  list(APPEND PROTO_GEN_HDRS ${PROTO_GEN_DIR}/${stem}.pb-c.h)
endforeach()
set(PROTO_ABS)
foreach(p IN LISTS LEGATE_PROTOS)
  list(APPEND PROTO_ABS ${PROTO_SRC_DIR}/${p})
endforeach()

add_custom_command(
  OUTPUT ${PROTO_GEN_SRCS} ${PROTO_GEN_HDRS}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${PROTO_GEN_DIR}
  COMMAND ${PROTOC_C} --c_out=${PROTO_GEN_DIR} -I${PROTO_SRC_DIR} -I${PROTOBUF_WKT_DIR}
          ${LEGATE_PROTOS} ${WKT_PROTOS}
  WORKING_DIRECTORY ${PROTO_SRC_DIR}
  DEPENDS ${PROTO_ABS}
  COMMENT "protoc-c: ${PROTO_SRC_DIR}"
  VERBATIM)

add_custom_command(
  OUTPUT ${PROTO_GEN_DIR}/proto_registry.c
  COMMAND ${CMAKE_COMMAND} -DGEN_DIR=${PROTO_GEN_DIR} -DOUT=${PROTO_GEN_DIR}/proto_registry.c
          -P ${CMAKE_SOURCE_DIR}/cmake/gen_registry.cmake
  DEPENDS ${PROTO_GEN_HDRS} ${CMAKE_SOURCE_DIR}/cmake/gen_registry.cmake
  COMMENT "proto registry"
  VERBATIM)

add_library(legate_proto STATIC ${PROTO_GEN_SRCS} ${PROTO_GEN_DIR}/proto_registry.c)
target_include_directories(legate_proto PUBLIC ${PROTO_GEN_DIR})
target_link_libraries(legate_proto PUBLIC PkgConfig::PROTOBUFC)
