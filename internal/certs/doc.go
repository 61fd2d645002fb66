// Package certs makes and reads the certificates of a QuotaMesh cluster: a
// development certificate authority, node certificates and client
// certificates, their PEM files, and the identities they carry.
//
// What it promises:
//
//   - Keys are ECDSA P-256. A CA signs leaf certificates only (path length
//     zero). Issued certificates start one minute in the past, to tolerate
//     small clock differences between machines.
//   - A node certificate carries exactly one URI SAN, quotamesh://node/<id>,
//     the DNS and IP SANs given as hosts, and both server and client
//     authentication (nodes dial each other and accept each other). A
//     client certificate carries quotamesh://client/<name>, its role as a
//     second URI SAN (quotamesh://role/admin or quotamesh://role/decide,
//     see Role) and client authentication only.
//   - Node IDs and client names are 1 to 64 bytes of [A-Za-z0-9._-]
//     (ValidateNodeID, ValidateClientName); they are never escaped, so the
//     URI and the name are the same bytes.
//   - NodeID, ClientName and IdentityOf read the identity from a
//     certificate's URI SANs and refuse certificates with none, with a
//     malformed one, or with more than one QuotaMesh identity or role. They do not
//     verify the certificate: verification against the CA is the TLS
//     layer's job (see the transport package).
//   - Parsers (ParseIdentityURI, ParseCertificatesPEM, ParsePrivateKeyPEM)
//     never panic on any input, bound their input size, and return errors
//     that wrap one of this package's sentinels. Each has a fuzz target.
//   - WriteDir never overwrites a file with different contents, and writes
//     private keys with mode 0600.
//
// The directory layout that WriteDir writes and LoadDir reads:
//
//	ca.crt                 CA certificate (then, during a CA rotation, the other CA trusted)
//	ca.key                 CA private key (only where certificates are issued)
//	nodes/<id>.crt         node certificate
//	nodes/<id>.key         node private key
//	clients/<name>.crt     client certificate
//	clients/<name>.key     client private key
//
// Certificates are PEM "CERTIFICATE" blocks; keys are PEM "PRIVATE KEY"
// blocks in PKCS #8 ("EC PRIVATE KEY" SEC 1 blocks are read too). A node
// needs only ca.crt and its own pair, which LoadNode reads.
package certs
