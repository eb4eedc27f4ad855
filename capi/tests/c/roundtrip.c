/* A C engine on Borealis through libborealis: appends pages in atomic groups, waits for them to
 * be durable, reads them back at VDL and at an older pinned LSN, and checks the error paths.
 * Usage: roundtrip CLUSTER_DIR VOLUME. Prints "roundtrip ok" and exits 0 on success. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "borealis.h"

#define PAGES 32

static void check(BorealisStatus status, BorealisStatus expected, const char *what) {
    if (status != expected) {
        fprintf(stderr, "%s: %s (expected %s): %s\n", what, borealis_status_name(status),
                borealis_status_name(expected), borealis_last_error());
        exit(1);
    }
}

static void fill(uint8_t *page, uint32_t bytes, uint64_t page_id, uint8_t round) {
    for (uint32_t i = 0; i < bytes; i++) page[i] = (uint8_t)(page_id * 31 + i * 7 + round);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: roundtrip CLUSTER_DIR VOLUME\n");
        return 2;
    }
    uint64_t volume = strtoull(argv[2], NULL, 10);
    BorealisWriter *writer = NULL;
    check(borealis_open(argv[1], volume, NULL, &writer), BOREALIS_OK, "open");

    uint32_t page_bytes = 0;
    check(borealis_page_bytes(writer, &page_bytes), BOREALIS_OK, "page_bytes");
    uint8_t *pages = malloc((size_t)page_bytes * PAGES);
    uint8_t *got = malloc(page_bytes);

    /* Round 1: PAGES page images in one atomic group (the last record carries the CPL). */
    BorealisRecord records[PAGES];
    for (uint64_t p = 0; p < PAGES; p++) {
        fill(pages + p * page_bytes, page_bytes, p, 1);
        records[p] = (BorealisRecord){.page = p, .kind = BOREALIS_PAGE_IMAGE,
                                      .payload = pages + p * page_bytes, .payload_len = page_bytes,
                                      .cpl = p == PAGES - 1};
    }
    uint64_t first = 0, last = 0, vdl = 0;
    check(borealis_append(writer, records, PAGES, &first, &last), BOREALIS_OK, "append round 1");
    if (last != first + PAGES - 1) {
        fprintf(stderr, "LSNs %llu..%llu are not consecutive\n", (unsigned long long)first,
                (unsigned long long)last);
        return 1;
    }
    check(borealis_wait_durable(writer, last, &vdl), BOREALIS_OK, "wait_durable round 1");
    if (vdl < last) {
        fprintf(stderr, "VDL %llu below %llu after waiting\n", (unsigned long long)vdl,
                (unsigned long long)last);
        return 1;
    }
    uint64_t round1 = last;
    check(borealis_pin_floor(writer, round1), BOREALIS_OK, "pin_floor");

    /* Round 2: page 0 zeroed, page 1 rewritten; a marker ends the group. */
    fill(pages + page_bytes, page_bytes, 1, 2);
    BorealisRecord round2[3] = {
        {.page = 0, .kind = BOREALIS_PAGE_ZERO, .payload = NULL, .payload_len = 0, .cpl = false},
        {.page = 1, .kind = BOREALIS_PAGE_IMAGE, .payload = pages + page_bytes, .payload_len = page_bytes, .cpl = false},
        {.page = 0, .kind = BOREALIS_MARKER, .payload = (const uint8_t *)"commit", .payload_len = 6, .cpl = true},
    };
    check(borealis_append(writer, round2, 3, &first, &last), BOREALIS_OK, "append round 2");
    check(borealis_wait_durable(writer, last, NULL), BOREALIS_OK, "wait_durable round 2");

    /* At VDL (lsn 0): page 0 is zeroes, page 1 is round 2's, the rest round 1's. */
    uint64_t version = 0;
    for (uint64_t p = 0; p < PAGES; p++) {
        check(borealis_read_page(writer, p, 0, got, page_bytes, &version), BOREALIS_OK, "read at VDL");
        uint8_t *want = pages + p * page_bytes;
        if (p == 0) {
            for (uint32_t i = 0; i < page_bytes; i++) {
                if (got[i] != 0) {
                    fprintf(stderr, "page 0 not zero at byte %u\n", i);
                    return 1;
                }
            }
        } else if (memcmp(got, want, page_bytes) != 0) {
            fprintf(stderr, "page %llu differs at VDL\n", (unsigned long long)p);
            return 1;
        }
    }
    /* At round 1's LSN (pinned): page 0 and page 1 are round 1's. */
    uint8_t *old = malloc(page_bytes);
    for (uint64_t p = 0; p < 2; p++) {
        fill(old, page_bytes, p, 1);
        check(borealis_read_page(writer, p, round1, got, page_bytes, &version), BOREALIS_OK, "read at round 1");
        if (memcmp(got, old, page_bytes) != 0 || version == 0 || version > round1) {
            fprintf(stderr, "page %llu at LSN %llu is not round 1's\n", (unsigned long long)p,
                    (unsigned long long)round1);
            return 1;
        }
    }
    /* A page never written reads as zeroes, version 0. */
    check(borealis_read_page(writer, 5000, 0, got, page_bytes, &version), BOREALIS_OK, "read unwritten");
    if (version != 0 || got[0] != 0 || got[page_bytes - 1] != 0) {
        fprintf(stderr, "an unwritten page is not zeroes\n");
        return 1;
    }

    /* Errors: a typed code and a message, never a crash. */
    check(borealis_read_page(writer, 1, 0, got, 100, NULL), BOREALIS_BUFFER_TOO_SMALL, "small buffer");
    if (strstr(borealis_last_error(), "a page is") == NULL) {
        fprintf(stderr, "no message for a small buffer: '%s'\n", borealis_last_error());
        return 1;
    }
    check(borealis_read_page(writer, 1, vdl + 1000000, got, page_bytes, NULL), BOREALIS_NOT_DURABLE, "read above VDL");
    BorealisRecord bad = {.page = 1, .kind = 9, .payload = NULL, .payload_len = 0, .cpl = true};
    check(borealis_append(writer, &bad, 1, NULL, NULL), BOREALIS_INVALID_ARGUMENT, "bad kind");
    check(borealis_append(writer, NULL, 0, NULL, NULL), BOREALIS_INVALID_ARGUMENT, "no records");
    check(borealis_append(NULL, records, 1, NULL, NULL), BOREALIS_INVALID_ARGUMENT, "null handle");
    BorealisWriter *none = NULL;
    check(borealis_open("/nonexistent/cluster", volume, NULL, &none), BOREALIS_CONFIG, "bad cluster dir");
    if (strcmp(borealis_status_name(4), "BOREALIS_FENCED") != 0 || strcmp(borealis_status_name(99), "BOREALIS_UNKNOWN") != 0) {
        fprintf(stderr, "status names are wrong\n");
        return 1;
    }

    check(borealis_pin_floor(writer, 0), BOREALIS_OK, "unpin");

    /* A second writer takes the volume over: it reads what the first made durable, and the
     * first one's next append fails as fenced (at once, or when it waits). */
    BorealisWriter *second = NULL;
    /* The second one names its TLS files itself (here the directory's own): first a key that
     * does not exist, refused as a configuration error. */
    char ca[4096], cert[4096], key[4096];
    snprintf(ca, sizeof ca, "%s/pki/ca.pem", argv[1]);
    snprintf(cert, sizeof cert, "%s/pki/client.pem", argv[1]);
    snprintf(key, sizeof key, "%s/pki/no-such.key", argv[1]);
    BorealisOpenOptions tls = {.page_bytes = 0, .pages_per_pg = 0, .tls_ca_cert = ca, .tls_cert = cert, .tls_key = key};
    check(borealis_open(argv[1], volume, &tls, &second), BOREALIS_CONFIG, "open with a missing key");
    snprintf(key, sizeof key, "%s/pki/client.key", argv[1]);
    check(borealis_open(argv[1], volume, &tls, &second), BOREALIS_OK, "second open");
    check(borealis_read_page(second, 1, 0, got, page_bytes, NULL), BOREALIS_OK, "read by the second writer");
    if (memcmp(got, pages + page_bytes, page_bytes) != 0) {
        fprintf(stderr, "the second writer does not see page 1 of round 2\n");
        return 1;
    }
    BorealisStatus status = borealis_append(writer, round2, 3, NULL, &last);
    if (status == BOREALIS_OK) status = borealis_wait_durable(writer, last, NULL);
    check(status, BOREALIS_FENCED, "the first writer after a takeover");
    check(borealis_close(writer), BOREALIS_OK, "close the fenced writer");
    check(borealis_close(second), BOREALIS_OK, "close");
    free(pages);
    free(got);
    free(old);
    printf("roundtrip ok\n");
    return 0;
}
