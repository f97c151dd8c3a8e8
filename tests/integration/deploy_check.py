#!/usr/bin/env python3
"""Checks docker-compose.yml, deploy/k8s/*.yaml and deploy/README.md against each other and the image.

    deploy_check.py REPO

Environment (set by test_deploy_files.sh, from deploy/Dockerfile and dpkg on this machine):
    FS_IMAGE_PROGRAMS  the fraudshield-* programs the image holds (space separated)
    FS_RUNTIME_CLOSURE the Debian packages in the runtime stage: installed there, and their
                       dependencies

Prints one PROBLEM line per problem and exits 1 when there is any; exits 0 with a SKIP line when
PyYAML is missing (python3-yaml, installed by `make deps`).

- YAML: docker-compose.yml, deploy/k8s/*.yaml and deploy/prometheus/*.yaml parse;
- compose, for each service running the FraudShield image: its program is in the image; it has a
  healthcheck whose tool is in the runtime stage and whose port is the service's listen or admin
  port; the scorer and the alerter listen for /health, /ready, /metrics on 0.0.0.0 and a fixed port;
  a service given FS_DATABASE_URL without a password in it gets PGPASSWORD; ingest gets
  FS_DATABASE_URL (its read API answers 503 without one); each file secret it mounts is created
  in deploy/README.md's "docker compose" section;
- Kubernetes, for each Deployment container: its program is in the image; every Secret and
  ConfigMap (and key) it mounts or reads into its environment is created by deploy/README.md's
  instructions (`kubectl create secret|configmap ... --from-file/--from-literal`, or a manifest of
  deploy/k8s it applies); ingest, scorer and alerter get FS_DATABASE_URL and PGPASSWORD; a scorer
  with a read-only root filesystem reads its rules file from a volume (else nobody can change the
  rules);
- probes and stopping: no liveness probe (k8s) asks /ready (a process waiting for PostgreSQL, a
  migration or the brokers answers 503 there: the kubelet would restart it in a loop); compose
  gives each program at least the stop_grace_period that its k8s terminationGracePeriodSeconds
  gives it (the manifests add up the drain budget: compose must not SIGKILL before it ends);
- topics: the list compose creates is the one deploy/README.md and README.md give, and every
  "<number> topics" in docker-compose.yml and deploy/README.md counts it;
- every curl example of the API in docker-compose.yml and deploy/README.md sends an API key.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

PROBLEMS = []
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
           "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
ADMIN_PROGRAMS = {"fraudshield-scorer", "fraudshield-alerter"}  # admin-addr / admin-port
DB_PROGRAMS = {"fraudshield-ingest", "fraudshield-scorer", "fraudshield-alerter"}


def problem(msg):
    PROBLEMS.append(msg)
    print("PROBLEM: " + msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def joined_lines(text, comment_prefix=None):
    """Lines with shell continuations (a trailing backslash) joined; comment markers stripped first."""
    out, cur = [], ""
    for line in text.splitlines():
        if comment_prefix is not None:
            s = line.lstrip()
            line = s[len(comment_prefix):] if s.startswith(comment_prefix) else ""
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def section(text, heading):
    """The text of the markdown section `## heading` (up to the next `## `)."""
    m = re.search(r"^## " + re.escape(heading) + r".*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def package_of_tool(tool):
    path = shutil.which(tool)
    if not path:
        return None
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            r = subprocess.run(["dpkg", "-S", q], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout.split(":")[0].split(",")[0].strip()
    return None


def url_has_password(url):
    m = re.match(r"^[a-z]+://([^@/]*)@", url)
    return bool(m and ":" in m.group(1)) or "password=" in url


# ---- YAML ------------------------------------------------------------------------------------

def load_all(yaml, repo):
    docs = {}
    files = [os.path.join(repo, "docker-compose.yml")]
    files += sorted(glob.glob(os.path.join(repo, "deploy/k8s/*.yaml")))
    files += sorted(glob.glob(os.path.join(repo, "deploy/prometheus/*.yaml")))
    for f in files:
        try:
            docs[os.path.relpath(f, repo)] = [d for d in yaml.safe_load_all(read(f)) if d is not None]
        except yaml.YAMLError as e:
            problem("%s does not parse: %s" % (os.path.relpath(f, repo), e))
    return docs


# ---- docker compose --------------------------------------------------------------------------

def env_dict(env):
    if isinstance(env, list):
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: "" if v is None else str(v) for k, v in (env or {}).items()}


def compose_default_path(spec):
    """`${VAR:-./x}` -> x, `./x` -> x."""
    m = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]*)\}", spec)
    return (m.group(1) if m else spec).removeprefix("./")


def check_compose_service(name, svc, programs, closure, readme_compose, top_secrets):
    cmd = svc.get("command") or []
    cmd = cmd.split() if isinstance(cmd, str) else cmd
    prog = cmd[0] if cmd else "(no command)"
    if prog not in programs:
        problem("compose service %s runs %s, which is not in the image" % (name, prog))
    env = env_dict(svc.get("environment"))
    ports = {env.get("FS_LISTEN_PORT"), env.get("FS_ADMIN_PORT")} - {None, ""}
    if prog in ADMIN_PROGRAMS:
        if env.get("FS_ADMIN_ADDR") not in ("0.0.0.0", "::"):
            problem("compose service %s: FS_ADMIN_ADDR is %r: /health, /ready, /metrics are not "
                    "reachable from outside the container" % (name, env.get("FS_ADMIN_ADDR")))
        if not re.fullmatch(r"[1-9][0-9]*", env.get("FS_ADMIN_PORT", "")):
            problem("compose service %s: no explicit FS_ADMIN_PORT (the healthcheck and scrapers "
                    "need a known port; the scorer's default 0 is a random one)" % name)
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable"):
        problem("compose service %s has no healthcheck" % name)
    else:
        test = hc.get("test") or []
        test = ["CMD-SHELL", test] if isinstance(test, str) else test
        words = test[1:] if test[0] == "CMD" else " ".join(test[1:]).split()
        tool = words[0] if words else ""
        pkg = package_of_tool(tool)
        if pkg is None:
            problem("compose service %s: healthcheck tool %r is not installed here (cannot tell its "
                    "package)" % (name, tool))
        elif pkg not in closure:
            problem("compose service %s: healthcheck tool %s (package %s) is not in the image's "
                    "runtime stage" % (name, tool, pkg))
        hc_ports = set(re.findall(r"https?://[^/:\s\"]+:([0-9]+)", " ".join(words)))
        if not hc_ports or not hc_ports <= ports:
            problem("compose service %s: healthcheck port(s) %s are not its listen/admin port %s"
                    % (name, sorted(hc_ports), sorted(ports)))
    url = env.get("FS_DATABASE_URL", "")
    if prog == "fraudshield-ingest" and not url:
        problem("compose service %s: no FS_DATABASE_URL (GET /api/v1/payments/{id} answers 503)"
                % name)
    if url and not url_has_password(url) and not env.get("PGPASSWORD"):
        problem("compose service %s: FS_DATABASE_URL without a password and no PGPASSWORD" % name)
    for s in svc.get("secrets") or []:
        sname = s if isinstance(s, str) else s.get("source")
        spec = (top_secrets.get(sname) or {}).get("file")
        if not spec:
            problem("compose service %s: secret %s is not a file secret of the compose file"
                    % (name, sname))
            continue
        path = compose_default_path(spec)
        if path not in readme_compose:
            problem("compose secret %s (%s) is never created in deploy/README.md's docker compose "
                    "section" % (sname, path))


def check_compose(compose, programs, closure, readme):
    readme_compose = section(readme, "docker compose")
    services = compose.get("services") or {}
    for name, svc in services.items():
        if svc.get("image", "").startswith("fraudshield") or "build" in svc:
            check_compose_service(name, svc, programs, closure, readme_compose,
                                  compose.get("secrets") or {})


# ---- probes and stopping ---------------------------------------------------------------------

def program_of(container_or_service):
    cmd = container_or_service.get("command") or container_or_service.get("args") or []
    cmd = cmd.split() if isinstance(cmd, str) else cmd
    return cmd[0] if cmd else None


def compose_seconds(value):
    """A compose duration ("1m30s", "75s", a bare number of seconds) in seconds, or None."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", str(value).strip())
    if not m or not any(m.groups()):
        return None
    h, mi, sec, ms = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + sec + ms / 1000.0


def k8s_deployments(docs):
    """(file, name, pod spec) of each workload in deploy/k8s."""
    for fname, objs in docs.items():
        if not fname.startswith("deploy/k8s/"):
            continue
        for o in objs:
            if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield fname, o["metadata"]["name"], o["spec"]["template"]["spec"]


def check_probes_and_grace(docs):
    grace = {}  # program -> k8s terminationGracePeriodSeconds (30: Kubernetes' default)
    for fname, name, spec in k8s_deployments(docs):
        for c in spec.get("containers") or []:
            grace[program_of(c)] = spec.get("terminationGracePeriodSeconds", 30)
            path = ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path")
            if path == "/ready":
                problem("%s %s container %s: the liveness probe asks /ready, which answers 503 while "
                        "the process waits for PostgreSQL, a migration or the brokers: use /health"
                        % (fname, name, c["name"]))
    compose = (docs.get("docker-compose.yml") or [{}])[0]
    for sname, svc in (compose.get("services") or {}).items():
        prog = program_of(svc)
        if prog not in grace:
            continue
        have = compose_seconds(svc.get("stop_grace_period", "10s"))
        if have is None:
            problem("compose service %s: cannot read stop_grace_period %r"
                    % (sname, svc.get("stop_grace_period")))
        elif have < grace[prog]:
            problem("compose service %s: stop_grace_period %s is shorter than the %s s %s gets in "
                    "deploy/k8s (terminationGracePeriodSeconds): its drain is cut short"
                    % (sname, svc.get("stop_grace_period", "10s (default)"), grace[prog], prog))


# ---- topics and examples ---------------------------------------------------------------------

def for_lists(text):
    return [m.split() for m in re.findall(r"for t in ([a-z_. ]+); do", text)]


def check_topics(compose_text, readme, top_readme):
    lists = for_lists(compose_text)
    if len(lists) != 1:
        problem("docker-compose.yml: expected one `for t in ...; do` topic loop, found %d" % len(lists))
        return
    topics = lists[0]
    for other in for_lists(readme):
        if sorted(other) != sorted(topics):
            problem("deploy/README.md creates topics %s, compose %s" % (other, topics))
    m = re.search(r"Create the topics first \((.*?)[;)]", top_readme, re.S)
    named = re.findall(r"`([a-z_.]+)`", m.group(1)) if m else []
    if sorted(named) != sorted(topics):
        problem("README.md's \"Create the topics first\" names %s, compose creates %s"
                % (named, topics))
    # acks=all means "every in-sync replica": it is only durable with replicas and a minimum ISR
    # that keeps a lone leader from acknowledging (a 202 is ingest's promise), in every place that
    # creates the topics.
    for fname, text in (("docker-compose.yml", compose_text), ("deploy/README.md", readme)):
        if not re.search(r"kafka-topics\.sh[^\n]*--create", text):
            problem("%s: no kafka-topics.sh --create found (the replication check saw nothing)" % fname)
        for create in re.findall(r"kafka-topics\.sh[^\n]*--create(?:[^\n]*\\\n)*[^\n]*", text):
            rf = re.search(r"--replication-factor\s+(\d+)", create)
            isr = re.search(r"min\.insync\.replicas=(\d+)", create)
            if not rf or int(rf.group(1)) < 3 or not isr or int(isr.group(1)) < 2:
                problem("%s creates topics without --replication-factor >= 3 and "
                        "min.insync.replicas >= 2: %s" % (fname, " ".join(create.split())))
    for fname, text in (("docker-compose.yml", compose_text), ("deploy/README.md", readme)):
        for word in re.findall(r"\b(\w+) topics\b", text, re.I):
            n = NUMBERS.get(word.lower(), int(word) if word.isdigit() else None)
            if n is not None and n != len(topics):
                problem("%s says \"%s topics\"; there are %d" % (fname, word, len(topics)))


def check_curl_examples(fname, text, comment_prefix=None):
    for line in joined_lines(text, comment_prefix):
        if re.search(r"\bcurl\b", line) and "/api/v1/" in line and \
                not re.search(r"X-API-Key|Authorization:", line, re.I):
            problem("%s: curl example without an API key (401): %s" % (fname, line.strip()[:100]))


# ---- Kubernetes ------------------------------------------------------------------------------

def readme_created(readme):
    """{("secret"|"configmap", name): set of keys} created by kubectl commands in deploy/README.md."""
    made = {}
    for line in joined_lines(readme):
        line = line.split(" #")[0]
        m = re.search(r"kubectl\b.*?\bcreate\s+(secret\s+generic|configmap)\s+([a-z0-9.-]+)(.*)", line)
        if not m:
            continue
        kind = "secret" if m.group(1).startswith("secret") else "configmap"
        keys = made.setdefault((kind, m.group(2)), set())
        for flag, val in re.findall(r"--from-(file|literal)=(\S+)", m.group(3)):
            val = val.strip("'\"")
            if flag == "literal" or "=" in val:
                keys.add(val.split("=", 1)[0])
            else:
                keys.add(os.path.basename(val))
    return made


def applied_files(readme):
    """The deploy/k8s manifests deploy/README.md applies (`-f deploy/k8s/x.yaml`)."""
    return set(re.findall(r"-f\s+(deploy/k8s/[\w.-]+\.yaml)", readme))


def applied_objects(docs, readme):
    """{("secret"|"configmap", name): keys} of the deploy/k8s manifests deploy/README.md applies."""
    made = {}
    for fname, objs in docs.items():
        if fname not in applied_files(readme):
            continue
        for o in objs:
            kind = {"Secret": "secret", "ConfigMap": "configmap"}.get(o.get("kind"))
            if kind:
                keys = set(o.get("data") or {}) | set(o.get("stringData") or {}) | \
                    set(o.get("binaryData") or {})
                made[(kind, o["metadata"]["name"])] = keys
    return made


def pod_refs(spec):
    """(kind, name, key or None, where) for each Secret / ConfigMap the pod needs (not optional)."""
    refs = []
    for v in spec.get("volumes") or []:
        for kind, field, name_key in (("secret", "secret", "secretName"),
                                      ("configmap", "configMap", "name")):
            src = v.get(field)
            if src and not src.get("optional"):
                items = src.get("items") or [{"key": None}]
                refs += [(kind, src[name_key], it["key"], "volume " + v["name"]) for it in items]
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for ef in c.get("envFrom") or []:
            for kind, field in (("secret", "secretRef"), ("configmap", "configMapRef")):
                src = ef.get(field)
                if src and not src.get("optional"):
                    refs.append((kind, src["name"], None, "envFrom of " + c["name"]))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for kind, field in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
                src = vf.get(field)
                if src and not src.get("optional"):
                    refs.append((kind, src["name"], src["key"], "env %s of %s" % (e["name"], c["name"])))
    return refs


def container_env(c, configmaps):
    env = {}
    for ef in c.get("envFrom") or []:
        cm = ef.get("configMapRef")
        if cm and cm["name"] in configmaps:
            env.update({k: str(v) for k, v in configmaps[cm["name"]].items()})
    for e in c.get("env") or []:
        env[e["name"]] = "<from %s>" % next(iter(e["valueFrom"])) if "valueFrom" in e else \
            str(e.get("value", ""))
    return env


def check_container(where, c, spec, programs, configmaps):
    cmd = c.get("command") or c.get("args") or []
    prog = cmd[0] if cmd else "(no command)"
    if prog not in programs:
        problem("%s runs %s, which is not in the image" % (where, prog))
    env = container_env(c, configmaps)
    if prog in DB_PROGRAMS:
        url = env.get("FS_DATABASE_URL", "")
        if not url:
            problem("%s: no FS_DATABASE_URL" % where)
        elif not url_has_password(url) and "PGPASSWORD" not in env:
            problem("%s: FS_DATABASE_URL without a password and no PGPASSWORD" % where)
    sc = c.get("securityContext") or {}
    if prog == "fraudshield-scorer" and sc.get("readOnlyRootFilesystem"):
        rules = env.get("FS_RULES_FILE", "")
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts") or []]
        if not any(rules.startswith(m) for m in mounts):
            problem("%s: read-only root filesystem and the rules file %r is not on a volume: the "
                    "rules cannot change without a new image" % (where, rules or "(image default)"))


def check_k8s(docs, programs, readme):
    made = readme_created(readme)
    applied = applied_objects(docs, readme)
    configmaps = {}
    for fname, objs in docs.items():
        for o in objs:
            if fname.startswith("deploy/k8s/") and o.get("kind") == "ConfigMap":
                configmaps[o["metadata"]["name"]] = o.get("data") or {}
    for fname, objs in docs.items():
        if not fname.startswith("deploy/k8s/"):
            continue
        for o in objs:
            if o.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                continue
            spec = o["spec"]["template"]["spec"]
            where = "%s %s" % (fname, o["metadata"]["name"])
            if fname not in applied_files(readme):
                problem("%s: deploy/README.md never applies %s" % (where, fname))
            for kind, name, key, what in pod_refs(spec):
                keys = made.get((kind, name), applied.get((kind, name)))
                if keys is None:
                    problem("%s: %s %s (%s) is not created in deploy/README.md's instructions"
                            % (where, kind, name, what))
                elif key is not None and key not in keys:
                    problem("%s: key %s of %s %s (%s) is not created in deploy/README.md's "
                            "instructions (it has %s)" % (where, key, kind, name, what, sorted(keys)))
            for c in spec.get("containers") or []:
                check_container("%s container %s" % (where, c["name"]), c, spec, programs, configmaps)


def main():
    repo = sys.argv[1]
    try:
        import yaml  # noqa: PLC0415 (python3-yaml: make deps)
    except ImportError:
        print("SKIP: PyYAML is not installed (python3-yaml, `make deps`): compose and Kubernetes "
              "checks not run")
        return 0
    programs = set(os.environ.get("FS_IMAGE_PROGRAMS", "").split())
    closure = set(os.environ.get("FS_RUNTIME_CLOSURE", "").split())
    readme = read(os.path.join(repo, "deploy/README.md"))
    top_readme = read(os.path.join(repo, "README.md"))
    compose_text = read(os.path.join(repo, "docker-compose.yml"))
    docs = load_all(yaml, repo)
    if "docker-compose.yml" in docs:
        check_compose(docs["docker-compose.yml"][0], programs, closure, readme)
    check_k8s(docs, programs, readme)
    check_probes_and_grace(docs)
    check_topics(compose_text, readme, top_readme)
    check_curl_examples("docker-compose.yml", compose_text, "#")
    check_curl_examples("deploy/README.md", readme)
    print("%d problem(s)" % len(PROBLEMS))
    return 1 if PROBLEMS else 0


if __name__ == "__main__":
    sys.exit(main())
