/*
 * Every protobuf message type legate was built with, by full name, for
 * resolving google.protobuf.Any type URLs.
 */
#ifndef LEGATE_XDS_REGISTRY_H
#define LEGATE_XDS_REGISTRY_H

#include <protobuf-c/protobuf-c.h>

/** Looks up a message descriptor by type URL
 *  ("type.googleapis.com/envoy.config.listener.v3.Listener") or by bare full
 *  name. Returns NULL if legate does not know the type. Thread-safe. */
const ProtobufCMessageDescriptor *xds_registry_lookup(const char *type_url);

/** Returns the part of a type URL after the last '/'. */
const char *xds_type_url_name(const char *type_url);

#endif
