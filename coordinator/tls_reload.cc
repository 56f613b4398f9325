#include "coordinator/tls_reload.h"

#include <openssl/err.h>
#include <sys/stat.h>

#include "coordinator/openssl_util.h"
#include "core/logging.h"

namespace bitfleet::coordinator {

// What a handshake serves, owned: the leaf certificate, the rest of its chain, its key and, with
// a client CA, the store client certificates are verified against and the CA names sent to ask
// for one.
struct TlsReloader::Material {
  X509* leaf = nullptr;
  STACK_OF(X509)* chain = nullptr;
  EVP_PKEY* key = nullptr;
  X509_STORE* store = nullptr;
  STACK_OF(X509_NAME)* ca_names = nullptr;

  Material() = default;
  Material(const Material&) = delete;
  Material& operator=(const Material&) = delete;
  ~Material() {
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(key);
    X509_STORE_free(store);
    sk_X509_NAME_pop_free(ca_names, X509_NAME_free);
  }
};

namespace {

// The files' identity: a change of any of them (a rewrite, a rename over it, a swapped
// symlink) changes it. "" when one cannot be stat'ed (in the middle of a swap).
std::string FilesIdentity(const TlsFiles& files) {
  std::string id;
  for (const std::string* path : {&files.cert_file, &files.key_file, &files.client_ca_file}) {
    if (path->empty()) continue;
    struct stat st {};
    if (::stat(path->c_str(), &st) != 0) return std::string();
    absl::StrAppend(&id, st.st_dev, ":", st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec,
                    ";");
  }
  return id;
}

}  // namespace

StatusOr<std::shared_ptr<const TlsReloader::Material>> TlsReloader::Load(const TlsFiles& files) {
  BF_ASSIGN_OR_RETURN(TlsMaterial read, ReadTlsFiles(files));  // CheckTlsFiles's checks, one read
  auto material = std::make_shared<Material>();
  material->key = read.key.release();
  material->leaf = read.chain.front().release();
  material->chain = sk_X509_new_null();
  for (size_t i = 1; i < read.chain.size(); ++i) sk_X509_push(material->chain, read.chain[i].release());
  if (!read.client_cas.empty()) {
    material->store = X509_STORE_new();
    material->ca_names = sk_X509_NAME_new_null();
    for (const auto& ca : read.client_cas) {
      X509_STORE_add_cert(material->store, ca.get());
      sk_X509_NAME_push(material->ca_names, X509_NAME_dup(X509_get_subject_name(ca.get())));
    }
  }
  return std::shared_ptr<const Material>(std::move(material));
}

TlsReloader::TlsReloader(const TlsFiles& files) : files_(files) {}

TlsReloader::~TlsReloader() = default;

StatusOr<std::shared_ptr<TlsReloader>> TlsReloader::Create(const TlsFiles& files) {
  BF_RETURN_IF_ERROR(CheckTlsPairing(files));
  if (!files.enabled()) return absl::InvalidArgumentError("TLS needs --tls-cert and --tls-key");
  std::shared_ptr<TlsReloader> reloader(new TlsReloader(files));
  reloader->identity_ = FilesIdentity(files);
  BF_ASSIGN_OR_RETURN(reloader->current_, Load(files));
  reloader->next_check_ = std::chrono::steady_clock::now() + std::chrono::seconds(files.reload_seconds);
  return reloader;
}

int TlsReloader::reloads() const {
  std::lock_guard lock(mu_);
  return reloads_;
}

std::shared_ptr<const TlsReloader::Material> TlsReloader::Current() {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (files_.reload_seconds <= 0 || now < next_check_) return current_;
  next_check_ = now + std::chrono::seconds(files_.reload_seconds);
  const std::string identity = FilesIdentity(files_);
  if (identity.empty() || identity == identity_) return current_;
  StatusOr<std::shared_ptr<const Material>> loaded = Load(files_);
  // A failed parse leaves errors on this thread's OpenSSL queue, and the handshake this runs in
  // would read them as its own failure.
  ERR_clear_error();
  if (!loaded.ok()) {
    if (identity != failed_identity_) {
      Logger("http")->warn("TLS files changed but do not load; still serving the previous ones: {}",
                           std::string(loaded.status().message()));
      failed_identity_ = identity;
    }
    return current_;
  }
  current_ = *std::move(loaded);
  identity_ = identity;
  ++reloads_;
  Logger("http")->info("TLS certificate reloaded from {}", files_.cert_file);
  return current_;
}

int TlsReloader::OnHandshake(SSL* ssl, void* self) {
  const std::shared_ptr<const Material> m = static_cast<TlsReloader*>(self)->Current();
  // The SSL takes its own references: the material may be replaced during the connection.
  if (SSL_use_cert_and_key(ssl, m->leaf, m->key, m->chain, /*override=*/1) != 1) return 0;
  if (m->store != nullptr) {
    if (SSL_set1_verify_cert_store(ssl, m->store) != 1) return 0;
    SSL_set_client_CA_list(ssl, SSL_dup_CA_list(m->ca_names));
  }
  return 1;
}

bool TlsReloader::SetUp(SSL_CTX& ctx) {
  SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) return false;
  SSL_CTX_set_cert_cb(&ctx, &TlsReloader::OnHandshake, this);
  if (!files_.client_ca_file.empty()) {
    SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return true;
}

}  // namespace bitfleet::coordinator
