package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

const (
	// MaxPEMSize bounds the PEM input the parsers accept, in bytes.
	MaxPEMSize = 1 << 20
	// MaxPEMCertificates bounds the certificates ParseCertificatesPEM
	// returns from one input.
	MaxPEMCertificates = 64

	pemCertificate = "CERTIFICATE"
	pemPKCS8       = "PRIVATE KEY"
	pemSEC1        = "EC PRIVATE KEY"
)

var pemBegin = []byte("-----BEGIN ")

// EncodeCertificatePEM returns cert as a PEM "CERTIFICATE" block.
func EncodeCertificatePEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: cert.Raw})
}

// EncodePrivateKeyPEM returns key as a PKCS #8 PEM "PRIVATE KEY" block.
func EncodePrivateKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("quotamesh/certs: marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
}

// ParseCertificatesPEM returns the certificates in data, in order: one or
// more "CERTIFICATE" blocks and nothing else but white space between and
// around them. Errors wrap ErrInvalidPEM.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(data, MaxPEMCertificates)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != pemCertificate {
			return nil, fmt.Errorf("%w: block %d is %q, want %q", ErrInvalidPEM, i, truncate(b.Type), pemCertificate)
		}
		if len(b.Headers) != 0 {
			return nil, fmt.Errorf("%w: block %d has headers", ErrInvalidPEM, i)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: block %d: %w", ErrInvalidPEM, i, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// ParseCertificatePEM returns the one certificate in data. Errors wrap
// ErrInvalidPEM.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: %d certificates, want 1", ErrInvalidPEM, len(certs))
	}
	return certs[0], nil
}

// ParsePrivateKeyPEM returns the ECDSA P-256 private key in data: exactly
// one "PRIVATE KEY" (PKCS #8) or "EC PRIVATE KEY" (SEC 1) block. Errors wrap
// ErrInvalidPEM.
func ParsePrivateKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	blocks, err := pemBlocks(data, 1)
	if err != nil {
		return nil, err
	}
	b := blocks[0]
	if len(b.Headers) != 0 {
		return nil, fmt.Errorf("%w: key block has headers (encrypted keys are not supported)", ErrInvalidPEM)
	}
	var key *ecdsa.PrivateKey
	switch b.Type {
	case pemPKCS8:
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPEM, err)
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: key is %T, want ECDSA P-256", ErrInvalidPEM, k)
		}
		key = ec
	case pemSEC1:
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPEM, err)
		}
		key = k
	default:
		return nil, fmt.Errorf("%w: block is %q, want %q or %q", ErrInvalidPEM, truncate(b.Type), pemPKCS8, pemSEC1)
	}
	if key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key curve is %s, want P-256", ErrInvalidPEM, key.Curve.Params().Name)
	}
	return key, nil
}

// pemBlocks splits data into 1 to limit PEM blocks, refusing anything but
// white space outside them.
func pemBlocks(data []byte, limit int) ([]*pem.Block, error) {
	if len(data) > MaxPEMSize {
		return nil, fmt.Errorf("%w: %d bytes, want at most %d", ErrInvalidPEM, len(data), MaxPEMSize)
	}
	var blocks []*pem.Block
	rest := data
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if len(blocks) == limit {
			return nil, fmt.Errorf("%w: more than %d blocks", ErrInvalidPEM, limit)
		}
		if !bytes.HasPrefix(rest, pemBegin) {
			return nil, fmt.Errorf("%w: text outside PEM blocks before block %d", ErrInvalidPEM, len(blocks))
		}
		b, after := pem.Decode(rest)
		// pem.Decode skips a malformed block to find a later one; refuse that.
		if b == nil || bytes.Count(rest[:len(rest)-len(after)], pemBegin) != 1 {
			return nil, fmt.Errorf("%w: block %d is malformed", ErrInvalidPEM, len(blocks))
		}
		blocks = append(blocks, b)
		rest = after
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%w: no PEM block", ErrInvalidPEM)
	}
	return blocks, nil
}
