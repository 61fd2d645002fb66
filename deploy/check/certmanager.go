package check

import (
	"bytes"
	encjson "encoding/json"
	"fmt"
	"slices"
	"strings"
)

// cert-manager's kinds are not part of the Kubernetes API, and its Go
// module is large: the fields these manifests use are checked against this
// subset of cert-manager.io/v1's schema (strictly: an unknown field is an
// error), plus what QuotaMesh needs of a certificate.

type cmObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type cmIssuerRef struct {
	Name  string `json:"name"`
	Kind  string `json:"kind,omitempty"`
	Group string `json:"group,omitempty"`
}

type cmCertificate struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   cmObjectMeta `json:"metadata"`
	Spec       struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		URIs        []string `json:"uris,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		IPAddresses []string `json:"ipAddresses,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		IsCA        bool     `json:"isCA,omitempty"`
		PrivateKey  *struct {
			Algorithm string `json:"algorithm,omitempty"`
			Size      int    `json:"size,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef cmIssuerRef `json:"issuerRef"`
	} `json:"spec"`
}

type cmIssuer struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   cmObjectMeta `json:"metadata"`
	Spec       struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

func checkCertManager(where string, js []byte) error {
	dec := encjson.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	_ = encjson.Unmarshal(js, &head)
	if head.APIVersion != "cert-manager.io/v1" {
		return fmt.Errorf("%s: apiVersion %q: use cert-manager.io/v1", where, head.APIVersion)
	}
	switch head.Kind {
	case "Certificate":
		var c cmCertificate
		if err := dec.Decode(&c); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		s := c.Spec
		switch {
		case s.SecretName == "" || s.IssuerRef.Name == "":
			return fmt.Errorf("%s: spec.secretName and spec.issuerRef.name are required", where)
		case s.IsCA:
			if !slices.Contains(s.Usages, "cert sign") {
				return fmt.Errorf("%s: a CA certificate needs the usage cert sign", where)
			}
		case len(s.URIs) != 1 || !strings.HasPrefix(s.URIs[0], "quotamesh://"):
			return fmt.Errorf("%s: spec.uris %v: a QuotaMesh certificate carries one quotamesh://node/<id> or quotamesh://client/<name>", where, s.URIs)
		case !slices.Contains(s.Usages, "client auth"):
			return fmt.Errorf("%s: spec.usages %v: every QuotaMesh certificate needs client auth", where, s.Usages)
		case strings.HasPrefix(s.URIs[0], "quotamesh://node/") && !slices.Contains(s.Usages, "server auth"):
			return fmt.Errorf("%s: spec.usages %v: a node certificate needs server auth", where, s.Usages)
		}
		for _, u := range s.Usages {
			if !slices.Contains([]string{"server auth", "client auth", "digital signature", "key encipherment", "cert sign"}, u) {
				return fmt.Errorf("%s: spec.usages: %q is not a usage cert-manager knows", where, u)
			}
		}
	case "Issuer", "ClusterIssuer":
		var i cmIssuer
		if err := dec.Decode(&i); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if (i.Spec.SelfSigned == nil) == (i.Spec.CA == nil) {
			return fmt.Errorf("%s: spec: give exactly one of selfSigned and ca", where)
		}
	default:
		return fmt.Errorf("%s: cert-manager kind %q is not checked here", where, head.Kind)
	}
	return nil
}
