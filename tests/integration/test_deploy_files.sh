#!/usr/bin/env bash
# The deployment files agree with the build and with each other. Static: no Docker engine, nothing
# started; this machine is Debian bookworm like the image, so dpkg answers for it. One PROBLEM
# line per finding, and the test fails when there is any:
#   1. build stage: each pkg-config name of the Makefile's PKGS, and each -l library of MODEL_LIBS
#      and TOOLS_LIBS, comes from a Debian package (dpkg -S of its .pc / .so here) that
#      deploy/Dockerfile's build stage installs and the Makefile's deps target (APT_PACKAGES)
#      lists (pkg-config prints nothing at all when one package is missing: the link fails);
#   2. programs: the Dockerfile's make command builds (make -n -B) every program it copies; the
#      image holds every program the Makefile builds except the dev broker, which it must not
#      (production never runs it), and every program compose or the k8s manifests name;
#   3. runtime stage: every library a copied program links directly (NEEDED) or dlopen()s comes from
#      a package the runtime stage installs (libc6 excepted), and every library ldd lists from one
#      it installs or one of their dependencies (dpkg-query, recursively); libGeoIP comes with its
#      database; `kubectl exec ... -- kill` in the docs needs procps in the image;
#   4. tests/integration/deploy_check.py: YAML parses; compose services and k8s containers (secrets
#      and config maps created by deploy/README.md, healthchecks, admin endpoints, the database for
#      ingest's read API, the scorer's rules on a volume), liveness probes on /health (never /ready),
#      compose stop_grace_period not shorter than the k8s terminationGracePeriodSeconds, topic
#      lists, curl examples with a key.
# FS_DOCKERFILE points the test at another Dockerfile. Needs `make` (the programs in $BUILD/bin).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
DOCKERFILE=${FS_DOCKERFILE:-$REPO/deploy/Dockerfile}
problems=0
problem() {
    echo "PROBLEM: $*"
    problems=$((problems + 1))
}

# The Dockerfile without comments, continuation lines joined.
df_lines() { sed -e '/^[[:space:]]*#/d' "$DOCKERFILE" | sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta'; }
stage_count() { df_lines | grep -cE '^FROM[[:space:]]'; }
# stage_lines N: the lines of the Nth stage (1-based)
stage_lines() { df_lines | awk -v want="$1" '/^FROM[ \t]/ { n++ } n == want'; }
# stage_apt N: the packages `apt-get install` installs in stage N, one a line
stage_apt() {
    stage_lines "$1" | grep -E 'apt-get .*install' | sed -E 's/.*apt-get [^&]*install//; s/&&.*//' |
        tr ' \t' '\n\n' | grep -Ev '^(-.*)?$' | sort -u || true
}
# mkvar NAME: a variable of the Makefile, as make expands it
mkvar() { env -u BUILD make -s --no-print-directory -C "$REPO" --eval 'fs-print-%: ; @echo $($*)' "fs-print-$1"; }
# The Debian package that ships a path (its resolved path too, and both sides of usrmerge): dpkg -S
# reads its whole database on each call, so learn_owners asks once for many paths.
declare -A OWNER=()
candidates() {
    local p
    for p in "$1" "$(realpath -s "$1")" "$(readlink -f "$1")"; do printf '%s\n' "$p" "${p#/usr}" "/usr$p"; done
}
learn_owners() {
    local line pkg path
    while IFS= read -r line; do
        [[ $line == diversion* || $line != *": /"* ]] && continue
        pkg=${line%%: /*}
        path=/${line#*: /}
        pkg=${pkg%%,*}
        OWNER[$path]=${pkg%%:*}
    done < <(for p in "$@"; do candidates "$p"; done | sort -u | xargs -r dpkg -S 2>/dev/null)
}
# owner PATH: sets PKG (no subshell, so what learn_owners learns stays learnt); false when none.
owner() {
    local q try
    [[ -n "${OWNER[$1]:-}" ]] && { PKG=${OWNER[$1]}; return 0; }
    for try in 1 2; do
        while read -r q; do
            [[ -n "${OWNER[$q]:-}" ]] && { PKG=${OWNER[$q]}; OWNER[$1]=$PKG; return 0; }
        done < <(candidates "$1")
        [[ $try == 1 ]] && learn_owners "$1"
    done
    return 1
}
in_list() { grep -qxF -- "$1" <<<"$2"; }

nstages=$(stage_count)
build_pkgs=$(stage_apt 1)
runtime_pkgs=$(stage_apt "$nstages")
apt_pkgs=$(mkvar APT_PACKAGES | tr ' ' '\n')
echo "build stage installs:" $build_pkgs
echo "runtime stage installs:" $runtime_pkgs

# ---- 1. build stage ---------------------------------------------------------------------------
for tool in build-essential pkg-config; do
    in_list "$tool" "$build_pkgs" || problem "build stage does not install $tool"
done
pkgs=$(mkvar PKGS)
libs=$(mkvar MODEL_LIBS; mkvar TOOLS_LIBS)
mapfile -t paths < <(for pc in $pkgs; do echo "$(pkg-config --variable=pcfiledir "$pc" 2>/dev/null)/$pc.pc"; done
    for flag in $libs; do [[ $flag == -l* ]] && cc -print-file-name="lib${flag#-l}.so"; done)
learn_owners "${paths[@]}"
for pc in $pkgs; do
    if ! dir=$(pkg-config --variable=pcfiledir "$pc" 2>/dev/null); then
        problem "pkg-config does not know $pc on this machine (run make deps): cannot check it"
        continue
    fi
    owner "$dir/$pc.pc" && pkg=$PKG || { problem "no Debian package ships $dir/$pc.pc"; continue; }
    in_list "$pkg" "$build_pkgs" || problem "PKGS has $pc (package $pkg): the build stage does not install $pkg"
    in_list "$pkg" "$apt_pkgs" || problem "PKGS has $pc (package $pkg): the Makefile's APT_PACKAGES does not list $pkg"
done
for flag in $libs; do
    [[ $flag == -l* ]] || continue
    so=$(cc -print-file-name="lib${flag#-l}.so")
    owner "$so" && pkg=$PKG || { problem "$flag: lib${flag#-l}.so is not installed here (run make deps)"; continue; }
    in_list "$pkg" "$build_pkgs" || problem "the Makefile links $flag (package $pkg): the build stage does not install $pkg"
    in_list "$pkg" "$apt_pkgs" || problem "the Makefile links $flag (package $pkg): APT_PACKAGES does not list $pkg"
done

# ---- 2. programs built and copied -------------------------------------------------------------
make_words=$(stage_lines 1 | grep -E '^RUN .*\bmake\b' | head -n 1 | sed -E 's/.*\bmake\b//; s/&&.*//') || true
[[ -n "$make_words" ]] || problem "the build stage runs no make command"
make_args=()
for w in $make_words; do [[ $w == -j* ]] || make_args+=("$w"); done
built=$(env -u BUILD make -n -B -C "$REPO" "${make_args[@]}" 2>/dev/null |
    grep -oE -- '-o [^ ]*/bin/fraudshield-[a-z]+' | sed 's#.*/##' | sort -u) || true
copied=$(stage_lines "$nstages" | grep -E '^COPY .*--from=' | grep -oE '/bin/fraudshield-[a-z]+' |
    sed 's#.*/##' | sort -u) || true
programs=$(mkvar BIN | tr ' ' '\n' | sed 's#.*/##' | grep . | sort -u)
echo "the build stage builds:" $built
echo "the image holds:" $copied
for p in $copied; do
    in_list "$p" "$built" || problem "the image copies $p, which the build stage's make command does not build"
done
named=$(grep -ohE 'fraudshield-[a-z]+' "$REPO/docker-compose.yml" "$REPO"/deploy/k8s/*.yaml | sort -u)
for p in $programs; do
    if [[ $p == fraudshield-devbroker ]]; then
        in_list "$p" "$copied" && problem "the image holds the dev broker (development and tests only)"
        continue
    fi
    if ! in_list "$p" "$copied"; then
        if in_list "$p" "$named"; then
            problem "$p is run by docker-compose.yml or deploy/k8s but is not in the image"
        else
            problem "$p (a program the Makefile builds, not the dev broker) is not in the image"
        fi
    fi
done

# ---- 3. runtime libraries ---------------------------------------------------------------------
# The runtime packages and everything they depend on (dpkg's status on this machine, recursively).
declare -A DEPENDS=() seen=()
while IFS=$'\t' read -r p deps; do DEPENDS[$p]=$deps; done < <(dpkg-query -W \
    -f='${db:Status-Abbrev}\t${Package}\t${Depends}, ${Pre-Depends}\n' | awk -F'\t' '$1 ~ /^ii/ { print $2 "\t" $3 }')
mapfile -t queue <<<"$runtime_pkgs"
while ((${#queue[@]})); do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n "$p" && -z "${seen[$p]:-}" ]] || continue
    seen[$p]=1
    if [[ -z "${DEPENDS[$p]+set}" ]]; then
        in_list "$p" "$runtime_pkgs" && problem "runtime package $p is not installed here (make deps?): its dependencies are not checked"
        continue # (else a virtual package or an alternative not chosen here)
    fi
    for d in $(tr ',|' '\n\n' <<<"${DEPENDS[$p]}" | sed -E 's/\(.*\)//; s/:any//' | tr -d ' ' | grep .); do
        [[ -n "${seen[$d]:-}" ]] || queue+=("$d")
    done
done
closure=$(printf '%s\n' "${!seen[@]}" | sort)
export FS_RUNTIME_CLOSURE="$closure" FS_IMAGE_PROGRAMS="$copied"

# every library path ldd shows, in one dpkg -S
mapfile -t paths < <(for p in $copied; do [[ -x "$BUILD/bin/$p" ]] && ldd "$BUILD/bin/$p"; done |
    awk '$3 ~ /^\// { print $3 }' | sort -u)
learn_owners "${paths[@]}"
for p in $copied; do
    bin=$BUILD/bin/$p
    [[ -x "$bin" ]] || { problem "$bin is not built (run make): its libraries are not checked"; continue; }
    ldd_out=$(ldd "$bin")
    grep -F 'not found' <<<"$ldd_out" | sed "s/^/PROBLEM: $p: /" && problems=$((problems + 1))
    needed=$(objdump -p "$bin" | awk '$1 == "NEEDED" { print $2 }')
    while read -r so _ path _; do
        [[ $path == /* ]] || continue
        # a sanitizer build (make SANITIZE=1 test) links the sanitizers' runtimes; the image is
        # built without them
        [[ $so =~ ^lib(asan|ubsan|lsan|tsan)\.so ]] && continue
        owner "$path" && pkg=$PKG || { problem "$p: $path belongs to no Debian package"; continue; }
        if in_list "$so" "$needed"; then
            [[ $pkg == libc6 ]] || in_list "$pkg" "$runtime_pkgs" ||
                problem "$p links $so (package $pkg): the runtime stage does not install $pkg"
        elif ! in_list "$pkg" "$closure"; then
            problem "$p loads $so (package $pkg): neither the runtime stage nor its packages' dependencies install it"
        fi
    done <<<"$ldd_out"
done
# Libraries the code loads with dlopen() (ldd cannot see them).
for so in $(grep -rhoE 'dlopen\("[^"]+"' "$REPO"/common "$REPO"/ingest "$REPO"/scorer "$REPO"/alerter "$REPO"/tools |
    sed -E 's/.*"(.*)"/\1/' | sort -u); do
    path=$(ldconfig -p | awk -v so="$so" '$1 == so { print $NF; exit }')
    [[ -n "$path" ]] && owner "$path" && pkg=$PKG || { problem "$so (dlopen) is not installed here (run make deps)"; continue; }
    in_list "$pkg" "$runtime_pkgs" || problem "the code dlopen()s $so (package $pkg): the runtime stage does not install $pkg"
done
# ingest's IP country: libGeoIP without its database answers "unknown" for every address.
if in_list libgeoip1 "$runtime_pkgs" && ! in_list geoip-database "$runtime_pkgs"; then
    problem "the runtime stage installs libgeoip1 without geoip-database (/usr/share/GeoIP)"
fi
# `kubectl exec POD -- kill ...` runs /bin/kill, which is procps (bookworm-slim has none); `sh -c
# 'kill ...'` uses the shell's builtin.
while IFS= read -r hit; do
    problem "$hit: \`-- kill\` needs procps in the image (or write: -- sh -c 'kill -HUP 1')"
done < <(in_list procps "$closure" || grep -rnoE -- '-- kill [^`]*' "$REPO"/docs "$REPO"/README.md \
    "$REPO"/deploy/README.md "$REPO"/deploy/k8s "$REPO"/docker-compose.yml | sed "s#^$REPO/##")

# ---- 4. compose, Kubernetes, docs -------------------------------------------------------------
python3 "$REPO/tests/integration/deploy_check.py" "$REPO" || problems=$((problems + 1))

fs_assert_eq 0 "$problems" "problems in the deployment files"
