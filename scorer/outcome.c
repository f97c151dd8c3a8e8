/* outcome: payment_outcomes messages (see outcome.h). */
#include "outcome.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fsutil.h"

/* Indexed by vault_outcome. */
static const char *const OUTCOME_NAMES[] = {NULL, "legitimate", "false_positive", "confirmed_fraud",
                                            "chargeback"};

int outcome_rank(const char *name) {
    for (int i = VAULT_LEGITIMATE; i <= VAULT_CHARGEBACK; i++)
        if (name && strcmp(OUTCOME_NAMES[i], name) == 0) return i;
    return 0;
}

const char *outcome_name(int rank) {
    return rank >= VAULT_LEGITIMATE && rank <= VAULT_CHARGEBACK ? OUTCOME_NAMES[rank] : NULL;
}

json_t *outcome_decode(const void *payload, size_t len, const char **code, char *err, size_t esz) {
    json_t *o = json_loadb(payload ? payload : "", len, 0, NULL), *row = NULL;
    const char *id = json_string_value(json_object_get(o, "payment_id"));
    const char *oc = json_string_value(json_object_get(o, "outcome"));
    const char *known = json_string_value(json_object_get(o, "known_at"));
    const char *oid = json_string_value(json_object_get(o, "outcome_id"));
    json_t *reason = json_object_get(o, "reason"), *source = json_object_get(o, "source");
    int64_t known_ms;
    char pid[37], lid[37];
    *code = "invalid_outcome";
    if (!json_is_object(o)) {
        *code = "undecodable";
        snprintf(err, esz, "not a JSON object");
    }
    else if (json_integer_value(json_object_get(o, "schema_version")) != 1)
        snprintf(err, esz, "schema_version: must be 1");
    else if (!id || !fs_uuid_valid(id)) snprintf(err, esz, "payment_id: must be a UUID");
    else if (oid && !fs_uuid_valid(oid)) snprintf(err, esz, "outcome_id: must be a UUID");
    else if (!known || fs_time_parse_rfc3339(known, &known_ms) != 0)
        snprintf(err, esz, "known_at: must be an RFC 3339 time");
    else if (!outcome_rank(oc))
        snprintf(err, esz, "outcome: must be confirmed_fraud, false_positive, chargeback or legitimate");
    else {
        snprintf(pid, sizeof pid, "%s", id);
        fs_uuid_lower(pid);
        /* the stored form, as PostgreSQL prints it back: store_insert_outcomes compares the ids */
        if (oid) {
            snprintf(lid, sizeof lid, "%s", oid);
            fs_uuid_lower(lid);
        }
        row = json_pack("{s:s, s:s, s:I, s:O?, s:O?, s:s?}", "payment_id", pid, "outcome", oc,
                        "known_at_ms", (json_int_t)known_ms, "reason",
                        json_is_string(reason) ? reason : NULL, "source",
                        json_is_string(source) ? source : NULL, "outcome_id", oid ? lid : NULL);
    }
    json_decref(o);
    return row;
}
