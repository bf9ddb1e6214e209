"""KV v2 and Transit through kmsgw's Vault front door with the official client, hvac, unchanged.

Run by test/vault/hvac.test.ts: VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT (or empty for plain HTTP) and
OTHER_TOKEN (a client without KV grants) in the environment. Prints one `ok <step>` per step that
passed; the first failed check raises, so the exit status is non-zero and the traceback says which.
"""
import base64
import os

import hvac
import hvac.exceptions

URL = os.environ["VAULT_ADDR"]
CA = os.environ.get("VAULT_CACERT") or False
MOUNT = "secret"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def ok(step):
    print("ok", step, flush=True)


def expect_raises(exc, fn):
    try:
        fn()
    except exc:
        return
    raise AssertionError(f"expected {exc.__name__}")


client = hvac.Client(url=URL, token=os.environ["VAULT_TOKEN"], verify=CA)
other = hvac.Client(url=URL, token=os.environ["OTHER_TOKEN"], verify=CA)

health = client.sys.read_health_status(method="GET")
assert health["initialized"] and not health["sealed"], health
ok("health")

kv = client.secrets.kv.v2
made = kv.create_or_update_secret(path="app/db", secret={"password": "one"}, mount_point=MOUNT)
assert made["data"]["version"] == 1, made
ok("kv create")

second = kv.create_or_update_secret(path="app/db", secret={"password": "two"}, cas=1, mount_point=MOUNT)
assert second["data"]["version"] == 2, second
ok("kv update with cas")

expect_raises(
    hvac.exceptions.InvalidRequest,
    lambda: kv.create_or_update_secret(path="app/db", secret={"password": "x"}, cas=1, mount_point=MOUNT),
)
ok("kv cas conflict")

latest = kv.read_secret_version(path="app/db", mount_point=MOUNT, raise_on_deleted_version=True)
assert latest["data"]["data"] == {"password": "two"}, latest
assert latest["data"]["metadata"]["version"] == 2, latest
first = kv.read_secret_version(path="app/db", version=1, mount_point=MOUNT, raise_on_deleted_version=True)
assert first["data"]["data"] == {"password": "one"}, first
ok("kv read versions")

meta = kv.read_secret_metadata(path="app/db", mount_point=MOUNT)
assert meta["data"]["current_version"] == 2 and sorted(meta["data"]["versions"]) == ["1", "2"], meta
ok("kv metadata")

kv.create_or_update_secret(path="app/cache", secret={"url": "redis://x"}, mount_point=MOUNT)
kv.create_or_update_secret(path="top", secret={"a": "b"}, mount_point=MOUNT)
assert kv.list_secrets(path="", mount_point=MOUNT)["data"]["keys"] == ["app/", "top"]
assert kv.list_secrets(path="app", mount_point=MOUNT)["data"]["keys"] == ["cache", "db"]
ok("kv list")

expect_raises(hvac.exceptions.Forbidden, lambda: other.secrets.kv.v2.read_secret_version(
    path="app/db", mount_point=MOUNT, raise_on_deleted_version=True))
ok("kv forbidden without a grant")

kv.delete_metadata_and_all_versions(path="app/db", mount_point=MOUNT)
expect_raises(hvac.exceptions.InvalidPath, lambda: kv.read_secret_version(
    path="app/db", mount_point=MOUNT, raise_on_deleted_version=True))
assert kv.list_secrets(path="app", mount_point=MOUNT)["data"]["keys"] == ["cache"]
ok("kv delete")

transit = client.secrets.transit
transit.create_key(name="orders")
enc = transit.encrypt_data(name="orders", plaintext=b64("card 4111"), associated_data=b64("order:7"))
ct = enc["data"]["ciphertext"]
assert ct.startswith("vault:v1:"), enc
dec = transit.decrypt_data(name="orders", ciphertext=ct, associated_data=b64("order:7"))
assert dec["data"]["plaintext"] == b64("card 4111"), dec
expect_raises(hvac.exceptions.InvalidRequest, lambda: transit.decrypt_data(
    name="orders", ciphertext=ct, associated_data=b64("order:8")))
ok("transit encrypt decrypt")

batch = transit.encrypt_data(name="orders", batch_input=[{"plaintext": b64("a")}, {"plaintext": b64("b")}])
results = batch["data"]["batch_results"]
assert len(results) == 2 and all(r["ciphertext"].startswith("vault:v1:") for r in results), batch
opened = transit.decrypt_data(name="orders", batch_input=[{"ciphertext": r["ciphertext"]} for r in results])
assert [r["plaintext"] for r in opened["data"]["batch_results"]] == [b64("a"), b64("b")], opened
ok("transit batch")

key = transit.generate_data_key(name="orders", key_type="plaintext")
assert len(base64.b64decode(key["data"]["plaintext"])) == 32, key
back = transit.decrypt_data(name="orders", ciphertext=key["data"]["ciphertext"])
assert back["data"]["plaintext"] == key["data"]["plaintext"]
wrapped = transit.generate_data_key(name="orders", key_type="wrapped")
assert "plaintext" not in wrapped["data"] and wrapped["data"]["ciphertext"].startswith("vault:v1:"), wrapped
ok("transit datakey")

transit.rotate_key(name="orders")
info = transit.read_key(name="orders")
assert info["data"]["latest_version"] == 2 and sorted(info["data"]["keys"]) == ["1", "2"], info
# hvac's rewrap_data takes no associated_data: a batch ciphertext (made without) is rewrapped.
rewrapped = transit.rewrap_data(name="orders", ciphertext=results[0]["ciphertext"])
assert rewrapped["data"]["ciphertext"].startswith("vault:v2:"), rewrapped
again = transit.decrypt_data(name="orders", ciphertext=rewrapped["data"]["ciphertext"])
assert again["data"]["plaintext"] == b64("a")
old = transit.decrypt_data(name="orders", ciphertext=ct, associated_data=b64("order:7"))
assert old["data"]["plaintext"] == b64("card 4111")
ok("transit rotate rewrap")

expect_raises(hvac.exceptions.Forbidden, lambda: other.secrets.transit.rotate_key(name="orders"))
expect_raises(hvac.exceptions.Forbidden, lambda: other.secrets.transit.read_key(name="orders"))
expect_raises(hvac.exceptions.InvalidPath, lambda: transit.read_key(name="no-such-key"))
ok("transit forbidden without a grant")
print("done", flush=True)
