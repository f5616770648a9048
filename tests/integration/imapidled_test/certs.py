"""A throwaway PKI made with the openssl CLI: a test CA, a server certificate for
localhost / 127.0.0.1 / 127.0.0.2 signed by it, and a second CA that signed nothing (for
"wrong CA" tests). EC P-256 keys: generating all of it takes a few tens of milliseconds."""
import hashlib
import os
import secrets
import ssl
import subprocess

SERVER_SANS = ("DNS:localhost", "IP:127.0.0.1", "IP:127.0.0.2")


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr.strip()}")


def _make_ca(d, stem, cn):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.pem", "-subj", f"/CN={cn}",
             "-days", "7", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    return os.path.join(d, f"{stem}.pem"), os.path.join(d, f"{stem}.key")


class TestPKI:
    __test__ = False  # not a pytest test class

    def __init__(self, directory, sans=SERVER_SANS):
        self.dir = directory
        self.ca_file, self.ca_key = _make_ca(directory, "ca", "imapidled test CA")
        self.wrong_ca_file, _ = _make_ca(directory, "wrong-ca", "imapidled wrong CA")
        self.server_cert, self.server_key = self.issue("server", "localhost", sans)

    def issue(self, stem, cn, sans, days=7, ca=None):
        """Issue a server certificate signed by the test CA; returns (cert, key) paths."""
        ca_file, ca_key = ca or (self.ca_file, self.ca_key)
        ext = os.path.join(self.dir, f"{stem}.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    f"subjectAltName={','.join(sans)}\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid\n")
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", f"/CN={cn}",
                 cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", ca_file, "-CAkey", ca_key,
                 "-set_serial", "0x" + secrets.token_hex(8), "-days", str(days),
                 "-extfile", ext, "-out", f"{stem}.pem", cwd=self.dir)
        return os.path.join(self.dir, f"{stem}.pem"), os.path.join(self.dir, f"{stem}.key")

    def fingerprint(self, cert=None):
        """SHA-256 of the certificate's DER form as `sha256:AB:CD:...` (the config's pin form)."""
        with open(cert or self.server_cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        digest = hashlib.sha256(der).hexdigest().upper()
        return "sha256:" + ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))

    def client_context(self, cafile=None):
        """A verifying client context (hostname check on) trusting only the test CA."""
        return ssl.create_default_context(cafile=cafile or self.ca_file)
