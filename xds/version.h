/* legate's version, shared by legate and legate-control. */
#ifndef LEGATE_VERSION_H
#define LEGATE_VERSION_H
#define LEGATE_VERSION "0.1.0"
#endif
