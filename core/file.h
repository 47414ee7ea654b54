/*
 * core/file.h: small file-system helpers every room uses. Nothing here
 * knows mail; nothing blocks longer than the system call it wraps.
 */
#ifndef FRUGAL_CORE_FILE_H
#define FRUGAL_CORE_FILE_H

#include <sys/types.h>

/* mkdir -p: PATH and its missing parents with MODE. 0 or -1 with errno. */
int file_mkdir_p(const char *path, mode_t mode);
/* The directory that holds PATH, and its parents. 0 or -1 with errno. */
int file_mkdir_parent(const char *path, mode_t mode);

#endif
