// AES-256-GCM with the key schedule set once per DEK: Node's createCipheriv builds a cipher context
// (and its key schedule) on every call, which costs more than the encryption itself for small
// values. A context here is made once per cached DEK; each call only sets the nonce. The key lives
// in OpenSSL's context, which EVP_CIPHER_CTX_free cleanses; release() frees it the moment the DEK
// leaves the cache, and the external's finalizer is the fallback. OpenSSL is Node's own: its
// symbols are resolved from the node binary when the addon loads (no -lcrypto).
#include <node_api.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define HEADER_BYTES 17 /* format byte + uint32 version + nonce */
#define NONCE_AT 5

typedef struct {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  unsigned char *aad; /* "kmsgw/v1 <key-id> <version>": not secret */
  size_t aad_len;
} gcm_key;

static void release_key(gcm_key *k) {
  if (k->enc != NULL) EVP_CIPHER_CTX_free(k->enc);
  if (k->dec != NULL) EVP_CIPHER_CTX_free(k->dec);
  k->enc = NULL;
  k->dec = NULL;
  free(k->aad);
  k->aad = NULL;
}

static void finalize_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  release_key((gcm_key *)data);
  free(data);
}

static napi_value fail(napi_env env, const char *message) {
  napi_throw_error(env, "KMSGW_AEAD", message);
  return NULL;
}

static int bytes_of(napi_env env, napi_value v, unsigned char **data, size_t *len) {
  bool is_typed = false;
  if (napi_is_typedarray(env, v, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  void *raw = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &raw, NULL, NULL) != napi_ok || type != napi_uint8_array) return 0;
  *data = (unsigned char *)raw;
  return 1;
}

/* An optional argument: *present says whether it was given (an empty AAD is still an AAD). */
static int optional_bytes(napi_env env, napi_value v, unsigned char **data, size_t *len, int *present) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  *present = !(t == napi_undefined || t == napi_null);
  if (!*present) {
    *data = NULL;
    *len = 0;
    return 1;
  }
  return bytes_of(env, v, data, len);
}

static gcm_key *key_of(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || data == NULL) return NULL;
  gcm_key *k = (gcm_key *)data;
  return k->enc == NULL ? NULL : k;
}

/* createKey(dek: Uint8Array(32), aad: Uint8Array) -> external */
static napi_value create_key(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  unsigned char *dek, *aad;
  size_t dek_len, aad_len;
  if (argc != 2 || !bytes_of(env, argv[0], &dek, &dek_len) || dek_len != KEY_BYTES || !bytes_of(env, argv[1], &aad, &aad_len)) {
    return fail(env, "createKey(dek: 32 bytes, aad: bytes)");
  }
  gcm_key *k = calloc(1, sizeof(gcm_key));
  if (k == NULL) return fail(env, "out of memory");
  k->enc = EVP_CIPHER_CTX_new();
  k->dec = EVP_CIPHER_CTX_new();
  k->aad = malloc(aad_len > 0 ? aad_len : 1);
  k->aad_len = aad_len;
  if (k->enc == NULL || k->dec == NULL || k->aad == NULL ||
      EVP_EncryptInit_ex(k->enc, EVP_aes_256_gcm(), NULL, dek, NULL) != 1 ||
      EVP_DecryptInit_ex(k->dec, EVP_aes_256_gcm(), NULL, dek, NULL) != 1) {
    release_key(k);
    free(k);
    return fail(env, "AES-256-GCM context set-up failed");
  }
  memcpy(k->aad, aad, aad_len);
  napi_value out;
  if (napi_create_external(env, k, finalize_key, NULL, &out) != napi_ok) {
    release_key(k);
    free(k);
    return fail(env, "could not wrap the context");
  }
  return out;
}

/* The envelope AAD: the key's own, then 0x00 and the caller's when given. */
static int add_aad(EVP_CIPHER_CTX *ctx, const gcm_key *k, int has_caller, const unsigned char *caller, size_t caller_len, int enc) {
  int n;
  int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) = enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  if (update(ctx, NULL, &n, k->aad, (int)k->aad_len) != 1) return 0;
  if (!has_caller) return 1;
  static const unsigned char zero = 0;
  if (update(ctx, NULL, &n, &zero, 1) != 1) return 0;
  return caller_len == 0 || update(ctx, NULL, &n, caller, (int)caller_len) == 1;
}

/*
 * seal(key, out, plaintext, callerAad?) -> undefined. `out` is the whole envelope, header already
 * written (nonce at 5..17); ciphertext and tag are written after it.
 */
static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  gcm_key *k = argc >= 3 ? key_of(env, argv[0]) : NULL;
  unsigned char *out, *pt, *aad = NULL;
  size_t out_len, pt_len, aad_len = 0;
  int has_aad = 0;
  if (k == NULL || !bytes_of(env, argv[1], &out, &out_len) || !bytes_of(env, argv[2], &pt, &pt_len) ||
      (argc == 4 && !optional_bytes(env, argv[3], &aad, &aad_len, &has_aad)) || out_len != HEADER_BYTES + pt_len + TAG_BYTES || pt_len > 0x7fffffff ||
      aad_len > 0x7fffffff) {
    return fail(env, "seal(key, out, plaintext, aad?)");
  }
  int n;
  EVP_CIPHER_CTX *ctx = k->enc;
  if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, out + NONCE_AT) != 1 || !add_aad(ctx, k, has_aad, aad, aad_len, 1) ||
      EVP_EncryptUpdate(ctx, out + HEADER_BYTES, &n, pt, (int)pt_len) != 1 ||
      EVP_EncryptFinal_ex(ctx, out + HEADER_BYTES + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out + HEADER_BYTES + pt_len) != 1) {
    return fail(env, "AES-256-GCM encryption failed");
  }
  return NULL;
}

/* open(key, envelope, out, callerAad?) -> boolean (false: authentication failed; `out` is then zeroed). */
static napi_value open_envelope(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  gcm_key *k = argc >= 3 ? key_of(env, argv[0]) : NULL;
  unsigned char *envl, *out, *aad = NULL;
  size_t env_len, out_len, aad_len = 0;
  int has_aad = 0;
  if (k == NULL || !bytes_of(env, argv[1], &envl, &env_len) || !bytes_of(env, argv[2], &out, &out_len) ||
      (argc == 4 && !optional_bytes(env, argv[3], &aad, &aad_len, &has_aad)) || env_len < HEADER_BYTES + TAG_BYTES ||
      out_len != env_len - HEADER_BYTES - TAG_BYTES || out_len > 0x7fffffff || aad_len > 0x7fffffff) {
    return fail(env, "open(key, envelope, out, aad?)");
  }
  int n, ok;
  EVP_CIPHER_CTX *ctx = k->dec;
  unsigned char tag[TAG_BYTES];
  memcpy(tag, envl + env_len - TAG_BYTES, TAG_BYTES);
  ok = EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, envl + NONCE_AT) == 1 && add_aad(ctx, k, has_aad, aad, aad_len, 0) &&
       EVP_DecryptUpdate(ctx, out, &n, envl + HEADER_BYTES, (int)out_len) == 1 &&
       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag) == 1 && EVP_DecryptFinal_ex(ctx, out + n, &n) == 1;
  if (!ok) memset(out, 0, out_len);
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

/* release(key) -> undefined: frees (and so cleanses) the contexts now; later calls with it throw. */
static napi_value release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data = NULL;
  if (argc == 1 && napi_get_value_external(env, argv[0], &data) == napi_ok && data != NULL) release_key((gcm_key *)data);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"createKey", NULL, create_key, NULL, NULL, NULL, napi_default, NULL},
      {"seal", NULL, seal, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, open_envelope, NULL, NULL, NULL, napi_default, NULL},
      {"release", NULL, release, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
