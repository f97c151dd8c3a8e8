/* libFuzzer target for fraudshield-replay's reading of a transaction CSV (tools/replay.c): the file
 * is data from outside (a download, an export), not configuration. The bytes are a header line and
 * data lines, as replay_main.c reads them (getline: each line with its newline). Beyond "does not
 * crash":
 *   - a header that is accepted names the required columns, each at a distinct position;
 *   - an accepted row has digits-only ids of 1..31 bytes, a decimal amount > 0 of at most two
 *     decimals, a fraud label 0/1 (-1 without the column); its payment and outcome bodies fit the
 *     buffers replay_main.c gives them and parse as JSON objects with the values of the row; its
 *     payment id is a UUID that the id map and the per-customer map take and give back.
 *
 * Build: make fuzz; run: build/fuzz/fuzz_replay -max_total_time=60 corpus/ */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "replay.h"

#define TEXT_MAX 1024 /* replay_main.c: char text[1024] for both bodies */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int digits_only(const char *s) {
    size_t n = strlen(s);
    return n >= 1 && n < RPL_FIELD_MAX && strspn(s, "0123456789") == n;
}

static void check_row(const rpl_tx *tx, const rpl_cols *cols) {
    char id[37], text[TEXT_MAX];
    if (!digits_only(tx->txid) || !digits_only(tx->customer) || !digits_only(tx->terminal) ||
        strtod(tx->amount, NULL) <= 0 || (cols->fraud < 0 ? tx->fraud != -1 : tx->fraud >> 1)) {
        fprintf(stderr, "replay: accepted a bad row\n");
        abort();
    }
    rpl_payment_id(tx, id);
    if (!fs_uuid_valid(id)) abort();
    int n = rpl_payment_json(tx, id, text, sizeof text);
    json_t *o = n > 0 ? json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    const char *amount = json_string_value(json_object_get(o, "amount"));
    if (!o || !amount || strcmp(amount, tx->amount) != 0 ||
        !json_is_string(json_object_get(o, "country")) ||
        !json_is_string(json_object_get(o, "timestamp"))) {
        fprintf(stderr, "replay: payment body: %s\n", n > 0 ? text : "(too long)");
        abort();
    }
    json_decref(o);
    n = rpl_outcome_json(tx->fraud == 1, tx->time_ms + 86400000, text, sizeof text);
    o = n > 0 ? json_loadb(text, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(o)) {
        fprintf(stderr, "replay: outcome body: %s\n", n > 0 ? text : "(too long)");
        abort();
    }
    json_decref(o);
    rpl_idmap m = {0};
    rpl_busy b = {0};
    int64_t v = 0;
    if (rpl_idmap_put(&m, id, tx->time_ms) != 0 || rpl_idmap_take(&m, id, &v) != 1 ||
        v != tx->time_ms || rpl_busy_add(&b, tx->customer, 7) != 0 ||
        !rpl_busy_elsewhere(&b, tx->customer, 8) || rpl_busy_elsewhere(&b, tx->customer, 7)) {
        fprintf(stderr, "replay: id maps\n");
        abort();
    }
    rpl_busy_done(&b, tx->customer);
    if (rpl_busy_count(&b) != 0) abort();
    rpl_idmap_free(&m);
    rpl_busy_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1), err[256];
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *line = text, *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    rpl_cols cols;
    if (rpl_header(line, &cols, err, sizeof err) != 0) {
        /* no header: the handbook's order, as the corpus writes it */
        cols = (rpl_cols){.txid = 1, .datetime = 2, .customer = 3, .terminal = 4, .amount = 5, .fraud = 8};
    } else {
        const int pos[] = {cols.txid, cols.datetime, cols.customer, cols.terminal, cols.amount};
        for (size_t i = 0; i < 5; i++)
            for (size_t j = i + 1; j < 5; j++)
                if (pos[i] < 0 || pos[i] == pos[j]) abort();
    }
    while (nl) {
        line = nl + 1;
        nl = strchr(line, '\n');
        char *row = line;
        char saved = nl ? nl[1] : '\0';
        if (nl) nl[1] = '\0'; /* the line with its newline, as getline gives it */
        rpl_tx tx;
        memset(&tx, 0, sizeof tx);
        if (rpl_parse(row, &cols, &tx, err, sizeof err) == 0) check_row(&tx, &cols);
        if (nl) nl[1] = saved;
    }
    free(text);
    return 0;
}
