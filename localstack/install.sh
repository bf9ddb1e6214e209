#!/usr/bin/env bash
# Install LocalStack (community core, KMS and S3, host mode, no Docker) into a private venv.
# Idempotent: a second run with the same pins only checks the venv (< 1 s).
#
#   bash localstack/install.sh
#
# Layout (KMSGW_CACHE_DIR replaces <repo>/.cache):
#   <repo>/.cache/localstack/venv      Python venv with localstack-core
#   <repo>/.cache/localstack/cert      self-signed server.pem (key + cert) for CUSTOM_SSL_CERT_PATH
#   <repo>/.cache/localstack/catalog   prebuilt AWS service-catalog index (saves ~3 s per fresh start)
#
# Env: KMSGW_CACHE_DIR, KMSGW_LOCALSTACK_PYTHON (a Python >= 3.13 to use).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"
MARKER="$VENV/.kmsgw-pins"
say() { echo "localstack/install.sh: $*"; }
die() { echo "localstack/install.sh: ERROR: $*" >&2; exit 1; }

# localstack-core 4.14.0 declares Requires-Python >=3.10 but really needs >= 3.13 (PEP 695 generics in
# services/kms/utils.py; `threading.Lock | None` evaluated at import in packages/api.py).
# Other pins: cbor2/pyopenssl/cryptography as known-good; service-identity is needed by the twisted
# gateway and 26.x wants cryptography >= 47, which pyopenssl 25.3.0 forbids.
PINS=(
  'localstack-core[base-runtime]==4.14.0'
  'cbor2==5.8.0'
  'pyopenssl==25.3.0'
  'cryptography==46.0.7'
  'service-identity==24.2.0'
)

mkdir -p "$LS_DIR"
# Serialise concurrent installs (e.g. CI step and a globalSetup racing) where flock exists.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$LS_DIR/.install.lock"
  flock 9
fi

is_py313() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' >/dev/null 2>&1; }
pick_python() {
  local c
  for c in "${KMSGW_LOCALSTACK_PYTHON:-}" python3.13 python3.14 python3 \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3 \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.14*/bin/python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    # Resolve to the real interpreter (pyenv shims may not point at 3.13 in this directory).
    local real
    real="$("$c" -c 'import sys; print(sys.executable)' 2>/dev/null)" || continue
    if [ -n "$real" ] && is_py313 "$real"; then echo "$real"; return 0; fi
  done
  return 1
}

# What the venv must record to be reused: the pins and the interpreter's version.
want_marker() { printf '%s\n' "${PINS[@]}"; "$1" -c 'import sys; print("python", sys.version.split()[0])'; }

venv_ok() {
  [ -x "$VENV/bin/python" ] && [ -f "$MARKER" ] || return 1
  [ "$(cat "$MARKER")" = "$(want_marker "$VENV/bin/python" 2>/dev/null)" ] || return 1
  "$VENV/bin/python" -c 'import localstack.version, boto3' >/dev/null 2>&1
}

if venv_ok; then
  say "venv up to date ($VENV)"
else
  if [ -n "${KMSGW_LOCALSTACK_PYTHON:-}" ] && ! is_py313 "$KMSGW_LOCALSTACK_PYTHON"; then
    die "KMSGW_LOCALSTACK_PYTHON=$KMSGW_LOCALSTACK_PYTHON is not a Python >= 3.13"
  fi
  PY="$(pick_python)" || die "LocalStack 4.14.0 needs Python >= 3.13; none found (tried python3.13, python3.14, python3, pyenv 3.13*/3.14*). Install one or set KMSGW_LOCALSTACK_PYTHON=/path/to/python3.13"
  if [ -x "$VENV/bin/python" ] && is_py313 "$VENV/bin/python" \
     && [ "$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')" = "$("$PY" -c 'import sys; print(sys.version.split()[0])')" ]; then
    say "updating venv $VENV"
  else
    say "creating venv $VENV with $PY ($("$PY" --version 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "python -m venv failed (on Debian/Ubuntu: apt-get install python3.13-venv)"
  fi
  rm -f "$MARKER"
  say "pip install ${PINS[*]} (cold: ~40 s)"
  t0=$SECONDS
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "${PINS[@]}" \
    || die "pip install failed"
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; die "pip check failed"; }
  "$VENV/bin/python" -c 'import localstack.version, boto3' || die "localstack does not import after install"
  want_marker "$VENV/bin/python" >"$MARKER"
  say "installed localstack $("$VENV/bin/python" -c 'import localstack.version as v; print(v.__version__)') in $((SECONDS - t0)) s"
fi

# Self-signed certificate. CUSTOM_SSL_CERT_PATH wants ONE pem holding key + cert (start.sh copies it into
# each instance's state dir, because LocalStack writes <pem>.key / <pem>.crt next to it on every start).
CERT_DIR="$LS_DIR/cert"
if [ ! -s "$CERT_DIR/server.pem" ]; then
  mkdir -p "$CERT_DIR"
  "$VENV/bin/python" - "$CERT_DIR/server.pem" <<'PY' || die "could not create the self-signed certificate"
import datetime, ipaddress, os, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost.localstack.cloud")])
now = datetime.datetime.now(datetime.timezone.utc)
san = x509.SubjectAlternativeName([
    x509.DNSName("localhost.localstack.cloud"), x509.DNSName("*.localhost.localstack.cloud"),
    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650)).add_extension(san, critical=False)
        .sign(key, hashes.SHA256()))
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                        serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "wb") as f:
    f.write(pem)
os.replace(tmp, sys.argv[1])
PY
  say "made self-signed certificate $CERT_DIR/server.pem"
fi

# Prebuilt service-catalog index: LocalStack otherwise builds it on the first AWS request of every fresh
# FILESYSTEM_ROOT (~3 s). The file name carries the localstack and botocore versions.
CATALOG_ROOT="$LS_DIR/catalog"
if ! ls "$CATALOG_ROOT"/usr/lib/localstack/service-catalog-*.dill >/dev/null 2>&1; then
  rm -rf "$CATALOG_ROOT.tmp"
  mkdir -p "$CATALOG_ROOT.tmp/usr/lib/localstack"
  if FILESYSTEM_ROOT="$CATALOG_ROOT.tmp" OVERRIDE_IN_DOCKER=0 DISABLE_EVENTS=1 \
       "$VENV/bin/python" -m localstack.aws.spec >"$CATALOG_ROOT.tmp/build.log" 2>&1 \
     && ls "$CATALOG_ROOT.tmp"/usr/lib/localstack/service-catalog-*.dill >/dev/null 2>&1; then
    rm -rf "$CATALOG_ROOT"
    mv "$CATALOG_ROOT.tmp" "$CATALOG_ROOT"
    say "prebuilt service catalog in $CATALOG_ROOT"
  else
    # Not fatal: LocalStack builds it lazily on first use.
    say "warning: could not prebuild the service catalog (see $CATALOG_ROOT.tmp/build.log); continuing"
  fi
fi
