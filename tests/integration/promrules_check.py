#!/usr/bin/env python3
"""Checks the Prometheus rules file against the runbook and against what the processes export.

    promrules_check.py RULES RUNBOOK [SCRAPE...]

RULES: deploy/prometheus/fraudshield-rules.yaml; RUNBOOK: docs/operations.md; SCRAPE: files holding
the /metrics text of the processes (ingest, scorers, alerter). Prints one line per problem and
exits 1 when there is any:

- structure: groups with a name and rules; each rule either `record` or `alert`, with an `expr`;
  each alert with `for`, labels.severity page|ticket, annotations summary, description and
  runbook_url = docs/operations.md#<alert name in lower case>, that anchor a heading of RUNBOOK
  (and every FraudShield* heading of RUNBOOK is an alert);
- every recorded series used in an expression (a name with ':') is defined by a `record` rule;
- every fs_* metric an expression uses is a `# TYPE` of some scrape (a histogram through its
  _bucket, _sum or _count series only); the label names its matchers and `by (...)` use exist on
  its scraped series (checked when it has series: a family without any is listed as unchecked);
- the section "## Metrics reference" of RUNBOOK (one table per `### fraudshield-<process>`, rows
  `| `fs_name` | type | `label`, `label` or - | meaning |`) lists exactly the fs_* families the
  scrapes export: none missing, none extra, each under the process its name starts with
  (fs_<process>_), with the scraped type and, when it has series, the scraped label names.
  common/metrics.c renders a family's `# HELP` / `# TYPE` even before it has any series, so every
  family a process registers is in each of its scrapes, whatever the traffic (e.g. the model
  metrics of a scorer without a model): the reference needs no "sometimes absent" entries.

Uses PyYAML when it is installed; otherwise a small line parser that understands the layout of
this one file (the test must not need a new package).
"""
import os
import re
import sys

ANCHOR_PREFIX = "docs/operations.md#"
STANDARD_LABELS = {"job", "instance", "le", "__name__"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def load_rules_yaml(text):
    import yaml  # noqa: PLC0415 (optional dependency)

    return yaml.safe_load(text)


def load_rules_lines(text):
    """The same structure as yaml.safe_load for this file's layout (groups > rules > fields)."""
    doc, group, rule, block, section = {"groups": []}, None, None, None, None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if block is not None:  # inside an `expr: |` block: deeper lines belong to it
            if indent > block[1]:
                rule["expr"] += line + "\n"
                continue
            block = None
        m = re.match(r"^- name: (.+)$", line)
        if m and indent == 2:
            group = {"name": m.group(1), "rules": []}
            doc["groups"].append(group)
            continue
        if line == "rules:":
            continue
        m = re.match(r"^- (record|alert): (.+)$", line)
        if m:
            rule = {m.group(1): m.group(2)}
            group["rules"].append(rule)
            section = None
            continue
        m = re.match(r"^(\w+):\s*(.*)$", line)
        if not m or rule is None:
            if line != "groups:":
                raise ValueError("cannot read line: " + raw)
            continue
        key, value = m.group(1), m.group(2)
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1].replace("''", "'")
        if key in ("labels", "annotations") and not value:
            section = key
            rule[key] = {}
        elif key == "expr":
            section = None
            if value == "|":
                rule["expr"], block = "", (rule, indent)
            else:
                rule["expr"] = value
        elif section and indent > 8:
            rule[section][key] = value
        else:
            section = None
            rule[key] = value
    return doc


def github_anchor(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def parse_scrapes(paths):
    """{family: type}, {series name: set of label names}, {family: set of scrape paths}."""
    types, labels, origins = {}, {}, {}
    for p in paths:
        for line in open(p, encoding="utf-8"):
            m = re.match(r"^# TYPE (\S+) (\S+)", line)
            if m:
                types[m.group(1)] = m.group(2)
                origins.setdefault(m.group(1), set()).add(p)
                continue
            m = re.match(r"^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s", line)
            if m and not line.startswith("#"):
                names = set(re.findall(r'(\w+)="', m.group(2) or ""))
                labels.setdefault(m.group(1), set()).update(names)
    return types, labels, origins


def parse_reference(runbook, problems):
    """{metric: (process, type, label names)} from the "## Metrics reference" section; None when
    RUNBOOK has no such section."""
    m = re.search(r"^## Metrics reference\s*$(.*?)(?=^## |\Z)", runbook, re.M | re.S)
    if not m:
        return None
    ref, process = {}, None
    for line in m.group(1).splitlines():
        h = re.match(r"^### fraudshield-(\w+)\s*$", line)
        if h:
            process = h.group(1)
            continue
        if not line.startswith("| `fs_"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = re.match(r"^`(fs_\w+)`$", cells[0])
        if len(cells) < 4 or not name or process is None:
            problems.append("Metrics reference: cannot read row: " + line)
            continue
        if name.group(1) in ref:
            problems.append("Metrics reference: %s is listed twice" % name.group(1))
        ref[name.group(1)] = (process, cells[1], set(re.findall(r"`(\w+)`", cells[2])))
    return ref


def check_reference(ref, types, series_labels, origins, problems, notes):
    """The reference against the scraped families (see the module's docstring)."""
    exported = {f for f in types if f.startswith("fs_")}
    for f in sorted(exported - set(ref)):
        where = ", ".join(sorted(os.path.basename(p) for p in origins.get(f, ())))
        problems.append("%s is exported (%s) but the Metrics reference does not list it" % (f, where))
    for f in sorted(set(ref) - exported):
        problems.append("the Metrics reference lists %s, which no process exports" % f)
    for f in sorted(exported & set(ref)):
        process, typ, documented = ref[f]
        if not f.startswith("fs_%s_" % process):
            problems.append("Metrics reference: %s is listed under fraudshield-%s" % (f, process))
        if typ != types[f]:
            problems.append("Metrics reference: %s is a %s, not a %s" % (f, types[f], typ))
        mine = [ls for s, ls in series_labels.items()
                if s == f or (types[f] == "histogram" and s in [f + x for x in HIST_SUFFIXES])]
        if not mine:
            notes.append("Metrics reference: %s has no series in the scrapes: labels unchecked" % f)
            continue
        have = set().union(*mine) - STANDARD_LABELS
        if have != documented:
            problems.append("Metrics reference: %s has labels %s, the reference says %s"
                            % (f, ", ".join(sorted(have)) or "none",
                               ", ".join(sorted(documented)) or "none"))


def family_of(name, types):
    """(family, problem) for an fs_* name used in an expression."""
    if name in types:
        if types[name] == "histogram":
            return name, "is a histogram: use its _bucket, _sum or _count series"
        return name, None
    for suf in HIST_SUFFIXES:
        base = name[: -len(suf)]
        if name.endswith(suf) and types.get(base) == "histogram":
            return base, None
    return None, "is exported by no process (no '# TYPE %s' in any /metrics)" % name


def used_labels(expr, metric):
    """Label names used with metric: in its matchers, and in `by (...)` of an aggregation of it."""
    names = set()
    for m in re.finditer(r"(?<![\w:])%s\{([^}]*)\}" % re.escape(metric), expr):
        names.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(1)))
    by = r"by\s*\(([^)]*)\)\s*\((?:\s*\w+\()?\s*%s(?![\w:])" % re.escape(metric)
    for m in re.finditer(by, expr):
        names.update(n.strip() for n in m.group(1).split(",") if n.strip())
    return names


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rules_path, runbook_path, scrapes = sys.argv[1], sys.argv[2], sys.argv[3:]
    text = open(rules_path, encoding="utf-8").read()
    problems, notes = [], []
    try:
        try:
            doc, how = load_rules_yaml(text), "PyYAML"
        except ImportError:
            doc, how = load_rules_lines(text), "line parser (no PyYAML)"
    except Exception as e:  # noqa: BLE001 (a YAML error of either parser)
        print("PROBLEM: %s is not valid: %s" % (rules_path, e))
        return 1
    print("rules read with %s" % how)

    runbook = open(runbook_path, encoding="utf-8").read()
    headings = {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", runbook, re.M)}
    runbook_alerts = re.findall(r"^#{1,6} (FraudShield\w+)\s*$", runbook, re.M)
    rules = []
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        problems.append("no `groups:` list")
        groups = []
    for g in groups:
        if not g.get("name") or not isinstance(g.get("rules"), list):
            problems.append("group %r: needs a name and a rules list" % g.get("name"))
            continue
        rules += g["rules"]
    records = {r["record"] for r in rules if "record" in r}
    types, series_labels, origins = parse_scrapes(scrapes)
    reference = parse_reference(runbook, problems)
    if reference is None:
        problems.append("%s has no section '## Metrics reference'" % runbook_path)
    elif scrapes:
        check_reference(reference, types, series_labels, origins, problems, notes)
    alerts = 0
    for r in rules:
        name = r.get("alert") or r.get("record")
        if ("alert" in r) == ("record" in r) or not isinstance(r.get("expr"), str):
            problems.append("rule %r: needs exactly one of record/alert, and an expr" % name)
            continue
        if "alert" in r:
            alerts += 1
            labels, ann = r.get("labels") or {}, r.get("annotations") or {}
            if "for" not in r:
                problems.append("alert %s: no `for:`" % name)
            if labels.get("severity") not in ("page", "ticket"):
                problems.append("alert %s: severity must be page or ticket" % name)
            for k in ("summary", "description", "runbook_url"):
                if not ann.get(k):
                    problems.append("alert %s: no annotation %s" % (name, k))
            want = ANCHOR_PREFIX + name.lower()
            if ann.get("runbook_url") != want:
                problems.append("alert %s: runbook_url should be %s" % (name, want))
            if name.lower() not in headings:
                problems.append("alert %s: no heading '%s' in %s" % (name, name, runbook_path))
        expr = r["expr"]
        for rec in set(re.findall(r"(?<![\w:])([a-zA-Z_]\w*:[\w:]+)", expr)):
            if rec not in records:
                problems.append("%s: uses %s, which no record rule defines" % (name, rec))
        if not scrapes:
            continue
        for metric in sorted(set(re.findall(r"(?<![\w:])(fs_\w+)", expr))):
            fam, why = family_of(metric, types)
            if why:
                problems.append("%s: %s %s" % (name, metric, why))
                continue
            wanted = used_labels(expr, metric) - STANDARD_LABELS
            mine = [ls for s, ls in series_labels.items()
                    if s == fam or s in [fam + x for x in HIST_SUFFIXES]]
            if wanted and not mine:
                notes.append("%s: %s has no series in the scrapes: labels %s unchecked"
                             % (name, metric, ", ".join(sorted(wanted))))
                continue
            have = set().union(*mine) if mine else set()
            for lab in sorted(wanted - have):
                problems.append("%s: %s has no label %r (its series have: %s)"
                                % (name, metric, lab, ", ".join(sorted(have)) or "none"))
    names = {r.get("alert") for r in rules}
    for h in runbook_alerts:
        if h not in names:
            problems.append("%s has a section for %s, which is no alert" % (runbook_path, h))
    for n in sorted(set(notes)):
        print("note: " + n)
    print("%d rules (%d alerts, %d recording), %d fs_* families scraped, %d in the reference"
          % (len(rules), alerts, len(records), sum(1 for t in types if t.startswith("fs_")),
             len(reference or {})))
    for p in problems:
        print("PROBLEM: " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
