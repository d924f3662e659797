#!/usr/bin/env bash
# The Debian package: cpack builds it from this build dir, dpkg -i installs
# it into the real system (root only: CI and the dev machines are throwaway),
# the installed legate validates a shipped example, the legate user exists,
# systemd accepts the units (if systemd-analyze exists), dpkg -r removes it.
# Also checks the Dockerfile's syntax: no Dockerfile linter is packaged in
# Debian 12, so a small parser below does it.
source "$(dirname "$0")/lib.sh"
skip() { echo "SKIP: $*"; FAIL=0; exit 77; }

# ---- the Dockerfile (needs nothing but python3) -----------------------------
out=$(python3 - "$SRC/Dockerfile" "$SRC/docs/examples/k8s/sidecar.yaml" "$SRC/CMakeLists.txt" <<'PY' 2>&1
import json, re, sys
known = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
         "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
errs, instrs, cur, start = [], [], "", 0
for n, line in enumerate(open(sys.argv[1]).read().split("\n"), 1):
    s = line.strip()
    if not cur and (not s or s.startswith("#")):
        continue
    if cur and s.startswith("#"):          # comments inside a continuation
        continue
    if not cur:
        start = n
    cur += " " + s
    if s.endswith("\\"):
        cur = cur[:-1]
        continue
    instrs.append((start, cur.strip()))
    cur = ""
if cur:
    errs.append("line %d: the file ends inside a continuation" % start)
stages, images, final = [], [], []
for n, text in instrs:
    word = text.split(None, 1)[0]
    if word.upper() not in known:
        errs.append("line %d: unknown instruction %r" % (n, word))
        continue
    if word != word.upper():
        errs.append("line %d: %s is not upper case" % (n, word))
    args, word = text[len(word):].strip(), word.upper()
    if not args:
        errs.append("line %d: %s without arguments" % (n, word))
    if word == "FROM":
        m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
        if not m:
            errs.append("line %d: FROM IMAGE [AS NAME] expected" % n)
        stages.append(m.group(2) if m else None)
        images.append(m.group(1) if m else "")
        final = []
    elif not stages and word != "ARG":
        errs.append("line %d: %s before the first FROM" % (n, word))
    else:
        final.append((n, word, args))
    for ref in re.findall(r"--from=(\S+)", args) if word == "COPY" else []:
        if ref not in stages[:-1]:
            errs.append("line %d: COPY --from=%s names no earlier stage" % (n, ref))
    if word in ("ENTRYPOINT", "CMD") and args.startswith("["):
        try:
            v = json.loads(args)
            assert isinstance(v, list) and all(isinstance(x, str) for x in v)
        except Exception:
            errs.append("line %d: %s: not a JSON array of strings" % (n, word))
last = {w: a for _, w, a in final}
if not images or not images[-1].startswith("debian:bookworm"):
    errs.append("the runtime stage is not Debian 12 (bookworm)")
if last.get("ENTRYPOINT") != '["/usr/bin/legate"]':
    errs.append('the runtime stage\'s ENTRYPOINT is not ["/usr/bin/legate"] (exec form, no shell)')
user = last.get("USER", "root").split(":")[0]
if user in ("root", "0"):
    errs.append("the runtime stage runs as root")
# The image the manifest runs is the one the Dockerfile says to build, and its
# tag is the project's version; the manifest's runAsUser is the image's user.
image = re.search(r"image:\s*(\S*legate:\S+)", open(sys.argv[2]).read()).group(1)
version = re.search(r"project\(legate VERSION (\S+)", open(sys.argv[3]).read()).group(1)
if "docker build -t %s " % image not in open(sys.argv[1]).read():
    errs.append("the Dockerfile does not say to build %s (the sidecar manifest's image)" % image)
if not image.endswith(":" + version):
    errs.append("the manifest's image %s is not tagged with the version %s" % (image, version))
uid = re.search(r"runAsUser:\s*(\d+)", open(sys.argv[2]).read()).group(1)
if user != uid:
    errs.append("the image's user %s is not the manifest's runAsUser %s" % (user, uid))
print("\n".join(errs) if errs else "ok")
PY
)
expect_eq "the Dockerfile parses (known instructions, stages, exec-form ENTRYPOINT, non-root user, the manifest's image)" "ok" "$out"

# ---- the package --------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root to install the package with dpkg -i"
for t in cpack dpkg dpkg-deb dpkg-shlibdeps flock; do
  command -v "$t" >/dev/null || skip "$t is not installed"
done
BUILD=$(cd "$BIN/.." && pwd)
[ -f "$BUILD/CPackConfig.cmake" ] || skip "no CPackConfig.cmake in $BUILD"

# One package test at a time on this machine: they share /usr/bin.
exec 9>/tmp/legate-package-test.lock
flock -w 600 9 || skip "another package test held the lock for 10 minutes"
if dpkg-query -W -f='${Status}' legate 2>/dev/null | grep -q 'install ok installed'; then
  skip "a legate package is installed on this machine already; not replacing it"
fi

INSTALLED=0
trap '[ "$INSTALLED" = 1 ] && dpkg -r legate >/dev/null 2>&1; cleanup' EXIT

(cd "$BUILD" && cpack -G DEB -B "$WORK/pkg") >"$WORK/cpack.log" 2>&1; rc=$?
expect_eq "cpack -G DEB builds the package" "0" "$rc"
deb=$(ls "$WORK"/pkg/legate_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || { cat "$WORK/cpack.log"; not_ok "a legate_*.deb was made"; finish; exit; }

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/legate ./usr/bin/legate-control ./usr/share/doc/legate/running.md \
         ./usr/share/doc/legate/examples/plaintext.yaml ./usr/share/doc/legate/examples/k8s/sidecar.yaml \
         ./usr/lib/systemd/system/legate.service ./usr/lib/systemd/system/legate-control.service; do
  check "the package holds $f" grep -qx -- "$f" <<<"$contents"
done

# Every library the binaries link directly (their NEEDED entries) comes from a
# package the .deb depends on. One dpkg -S for all: it is slow.
depends=$(dpkg-deb -f "$deb" Depends)
echo "     Depends: $depends"
declare -A lib_path=()
for b in "$BIN/legate" "$BIN/../control-sample/legate-control"; do
  resolved=$(ldd "$b")
  for so in $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    path=$(awk -v so="$so" '$1 == so && $3 ~ /^\// {print $3}' <<<"$resolved")
    [ -n "$path" ] && lib_path[$so]=$(readlink -f "$path") || not_ok "ldd finds $so"
  done
done
# dpkg knows merged-/usr paths under either /lib or /usr/lib: ask for both.
owners=$(for p in "${lib_path[@]}"; do echo "$p"; echo "${p#/usr}"; done | sort -u | xargs dpkg -S 2>/dev/null)
for so in "${!lib_path[@]}"; do
  p=${lib_path[$so]}
  pkg=$(awk -v a="$p" -v b="${p#/usr}" '$NF == a || $NF == b {sub(/:.*/, "", $1); print $1; exit}' <<<"$owners")
  [ -n "$pkg" ] || { not_ok "$so ($p) belongs to a Debian package"; continue; }
  check "depends on $pkg (for $so)" grep -qE "(^|, )$pkg( |,|$)" <<<"$depends"
done
check "depends on adduser (postinst)" grep -qE "(^|, )adduser( |,|$)" <<<"$depends"

dpkg -i "$deb" >"$WORK/dpkg-i.log" 2>&1; rc=$?
[ "$rc" = 0 ] && INSTALLED=1 || cat "$WORK/dpkg-i.log"
expect_eq "dpkg -i installs it" "0" "$rc"

ex=/usr/share/doc/legate/examples/plaintext.yaml
out=$(cd "$WORK" && /usr/bin/legate --mode validate -c "$ex" 2>&1); rc=$?
expect_eq "the installed legate validates an installed example" "0 configuration '$ex' OK" "$rc $out"
check "the installed legate-control runs" /usr/bin/legate-control --version
check "the legate system user exists" getent passwd legate
check "... with its own group" getent group legate
check "... and no login shell" grep -qE '^legate:.*:(/usr/sbin/nologin|/bin/false)$' /etc/passwd
check "/etc/legate is there, for the legate group" test "$(stat -c %G /etc/legate)" = legate
check "the units are installed but not enabled" \
  test ! -e /etc/systemd/system/multi-user.target.wants/legate.service -a \
       ! -e /etc/systemd/system/multi-user.target.wants/legate-control.service

if command -v systemd-analyze >/dev/null; then
  for u in legate legate-control; do
    out=$(systemd-analyze verify "/usr/lib/systemd/system/$u.service" 2>&1); rc=$?
    expect_eq "systemd-analyze verify accepts $u.service" "0 " "$rc $out"
  done
else
  echo "skip - systemd-analyze is not installed: the units are not verified"
fi

dpkg -i "$deb" >"$WORK/dpkg-i2.log" 2>&1; rc=$?
expect_eq "installing it again over itself works (the user exists already)" "0" "$rc"

dpkg -r legate >"$WORK/dpkg-r.log" 2>&1; rc=$?
[ "$rc" = 0 ] && INSTALLED=0 || cat "$WORK/dpkg-r.log"
expect_eq "dpkg -r removes it" "0" "$rc"
check "... and /usr/bin/legate with it" test ! -e /usr/bin/legate
check "... and the units" test ! -e /usr/lib/systemd/system/legate.service
check "... leaving the legate user" getent passwd legate

finish
