/*
 * A minimal SQLite shell for tests/batch_atomic_e2e.rs, linked with the SQLite amalgamation
 * built with SQLITE_ENABLE_BATCH_ATOMIC_WRITE (Debian's SQLite is not, so its commits never
 * reach the borealis VFS's batch-atomic file controls).
 *
 *     batch_shell EXTENSION BASE_VFS DATABASE < script.sql
 *
 * Loads EXTENSION, registers the VFS "counting" on top of the VFS named BASE_VFS, opens DATABASE
 * (a file name, or a URI without vfs=) through it and runs the script's statements in order. A
 * row prints as the sqlite3 shell's list mode prints it (columns joined by '|', NULL empty), a
 * failed statement as "error: MESSAGE" on stdout, in order with the rows; stdout is flushed after
 * every statement, so what a killed process printed is what it had done. A script that does not
 * parse stops the program with status 1.
 *
 * "counting" forwards everything to BASE_VFS and counts what SQLite asks of it, so that a test
 * can see from outside which commit path SQLite took. The SQL function io_counts() returns, and
 * resets, the counts since its last call:
 *
 *     journals=J begins=B commits=C rollbacks=R
 *
 * J: rollback journals SQLite opened through the VFS (xOpen with SQLITE_OPEN_MAIN_JOURNAL). A
 *    batch-atomic commit keeps its journal in SQLite's own memory and never opens one.
 * B, C, R: SQLITE_FCNTL_BEGIN_ATOMIC_WRITE, COMMIT_ATOMIC_WRITE that succeeded, and
 *    ROLLBACK_ATOMIC_WRITE, sent to a main database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

static sqlite3_vfs *base_vfs;

static struct {
    int journals, begins, commits, rollbacks;
} seen;

/* A file of "counting": the base VFS's file lives in the same allocation, right after it. */
typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int main_db;
} CountingFile;

static sqlite3_file *real(sqlite3_file *file) { return ((CountingFile *)file)->real; }

static int file_close(sqlite3_file *f) { return real(f)->pMethods->xClose(real(f)); }
static int file_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 at) {
    return real(f)->pMethods->xRead(real(f), buf, n, at);
}
static int file_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 at) {
    return real(f)->pMethods->xWrite(real(f), buf, n, at);
}
static int file_truncate(sqlite3_file *f, sqlite3_int64 size) {
    return real(f)->pMethods->xTruncate(real(f), size);
}
static int file_sync(sqlite3_file *f, int flags) { return real(f)->pMethods->xSync(real(f), flags); }
static int file_size(sqlite3_file *f, sqlite3_int64 *size) {
    return real(f)->pMethods->xFileSize(real(f), size);
}
static int file_lock(sqlite3_file *f, int level) { return real(f)->pMethods->xLock(real(f), level); }
static int file_unlock(sqlite3_file *f, int level) {
    return real(f)->pMethods->xUnlock(real(f), level);
}
static int file_check_reserved(sqlite3_file *f, int *out) {
    return real(f)->pMethods->xCheckReservedLock(real(f), out);
}
static int file_control(sqlite3_file *f, int op, void *arg) {
    int rc = real(f)->pMethods->xFileControl(real(f), op, arg);
    if (((CountingFile *)f)->main_db) {
        switch (op) {
        case SQLITE_FCNTL_BEGIN_ATOMIC_WRITE: seen.begins++; break;
        case SQLITE_FCNTL_COMMIT_ATOMIC_WRITE: seen.commits += rc == SQLITE_OK; break;
        case SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE: seen.rollbacks++; break;
        }
    }
    return rc;
}
static int file_sector_size(sqlite3_file *f) { return real(f)->pMethods->xSectorSize(real(f)); }
static int file_device_characteristics(sqlite3_file *f) {
    return real(f)->pMethods->xDeviceCharacteristics(real(f));
}

/* Version 1: no shared memory (no WAL) and no mmap, which neither the borealis VFS nor the
 * tests' rollback-journal databases on the unix VFS use. */
static const sqlite3_io_methods counting_io = {
    1, file_close, file_read, file_write, file_truncate, file_sync, file_size, file_lock,
    file_unlock, file_check_reserved, file_control, file_sector_size,
    file_device_characteristics, 0, 0, 0, 0, 0, 0,
};

static int vfs_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                    int *out_flags) {
    (void)vfs;
    CountingFile *counting = (CountingFile *)file;
    counting->real = (sqlite3_file *)&counting[1];
    counting->main_db = (flags & SQLITE_OPEN_MAIN_DB) != 0;
    int rc = base_vfs->xOpen(base_vfs, name, counting->real, flags, out_flags);
    /* SQLite closes a file whose open failed only if pMethods is set. */
    counting->base.pMethods = counting->real->pMethods ? &counting_io : NULL;
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_MAIN_JOURNAL)) seen.journals++;
    return rc;
}
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
    (void)v;
    return base_vfs->xDelete(base_vfs, name, sync_dir);
}
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    (void)v;
    return base_vfs->xAccess(base_vfs, name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
    (void)v;
    return base_vfs->xFullPathname(base_vfs, name, n, out);
}
static void *vfs_dl_open(sqlite3_vfs *v, const char *path) {
    (void)v;
    return base_vfs->xDlOpen(base_vfs, path);
}
static void vfs_dl_error(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    base_vfs->xDlError(base_vfs, n, out);
}
static void (*vfs_dl_sym(sqlite3_vfs *v, void *lib, const char *symbol))(void) {
    (void)v;
    return base_vfs->xDlSym(base_vfs, lib, symbol);
}
static void vfs_dl_close(sqlite3_vfs *v, void *lib) {
    (void)v;
    base_vfs->xDlClose(base_vfs, lib);
}
static int vfs_randomness(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return base_vfs->xRandomness(base_vfs, n, out);
}
static int vfs_sleep(sqlite3_vfs *v, int micros) {
    (void)v;
    return base_vfs->xSleep(base_vfs, micros);
}
static int vfs_current_time(sqlite3_vfs *v, double *out) {
    (void)v;
    return base_vfs->xCurrentTime(base_vfs, out);
}
static int vfs_get_last_error(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return base_vfs->xGetLastError(base_vfs, n, out);
}
static int vfs_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
    (void)v;
    return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

static sqlite3_vfs counting_vfs = {
    2, 0, 0, 0, "counting", 0, vfs_open, vfs_delete, vfs_access, vfs_full_pathname,
    vfs_dl_open, vfs_dl_error, vfs_dl_sym, vfs_dl_close, vfs_randomness, vfs_sleep,
    vfs_current_time, vfs_get_last_error, vfs_current_time_int64, 0, 0, 0,
};

static void io_counts(sqlite3_context *context, int argc, sqlite3_value **argv) {
    (void)argc;
    (void)argv;
    char *counts = sqlite3_mprintf("journals=%d begins=%d commits=%d rollbacks=%d", seen.journals,
                                   seen.begins, seen.commits, seen.rollbacks);
    memset(&seen, 0, sizeof seen);
    sqlite3_result_text(context, counts, -1, sqlite3_free);
}

static char *read_all(FILE *in) {
    size_t len = 0, cap = 1 << 16;
    char *text = malloc(cap);
    size_t n;
    while (text && (n = fread(text + len, 1, cap - len - 1, in)) > 0) {
        len += n;
        if (cap - len == 1) text = realloc(text, cap *= 2);
    }
    if (text) text[len] = 0;
    return text;
}

static void die(const char *what, const char *message) {
    fprintf(stderr, "batch_shell: %s: %s\n", what, message);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 4) die("usage", "batch_shell EXTENSION BASE_VFS DATABASE < script.sql");
    sqlite3 *loader;
    char *error = 0;
    if (sqlite3_open(":memory:", &loader) != SQLITE_OK) die("open :memory:", sqlite3_errmsg(loader));
    sqlite3_enable_load_extension(loader, 1);
    /* The extension registers its VFS for the whole process. */
    if (sqlite3_load_extension(loader, argv[1], 0, &error) != SQLITE_OK) die(argv[1], error);
    sqlite3_close(loader);

    base_vfs = sqlite3_vfs_find(argv[2]);
    if (!base_vfs) die(argv[2], "no such VFS");
    counting_vfs.szOsFile = (int)sizeof(CountingFile) + base_vfs->szOsFile;
    counting_vfs.mxPathname = base_vfs->mxPathname;
    sqlite3_vfs_register(&counting_vfs, 0);

    sqlite3 *db;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
    if (sqlite3_open_v2(argv[3], &db, flags, "counting") != SQLITE_OK) die(argv[3], sqlite3_errmsg(db));
    sqlite3_create_function(db, "io_counts", 0, SQLITE_UTF8, 0, io_counts, 0, 0);

    char *script = read_all(stdin);
    if (!script) die("stdin", "out of memory");
    const char *next = script;
    while (*next) {
        sqlite3_stmt *statement;
        if (sqlite3_prepare_v2(db, next, -1, &statement, &next) != SQLITE_OK) {
            die("prepare", sqlite3_errmsg(db));
        }
        if (!statement) continue; /* white space or a comment */
        int rc;
        while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
            for (int i = 0; i < sqlite3_column_count(statement); i++) {
                const unsigned char *value = sqlite3_column_text(statement, i);
                printf("%s%s", i ? "|" : "", value ? (const char *)value : "");
            }
            putchar('\n');
        }
        if (rc != SQLITE_DONE) printf("error: %s\n", sqlite3_errmsg(db));
        sqlite3_finalize(statement);
        fflush(stdout);
    }
    free(script);
    return sqlite3_close(db) == SQLITE_OK ? 0 : 1;
}
