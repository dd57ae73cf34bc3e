//! TLS on the Kafka listener with real clients: confluent-kafka and kcat over `SSL`, mutual TLS
//! with a client CA, and `SASL_SSL` logins, against a CA and certificates made by the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{binary, run, script, success, Door, GATEWAY};
use testkit::BrokerProcess;

/// The files of a test CA: the CA, the gateway's certificate for 127.0.0.1 and its key, and a
/// client's certificate and key.
struct Certificates {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl not found ({e}): scripts/test.sh installs it"));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes a CA and two certificates it signs in `dir`.
fn certificates(dir: &Path) -> Certificates {
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=test CA"];
    ca.extend(key);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, extensions) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let subject = format!("/CN={name}");
        let (key_file, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext), extensions).expect("write the extensions");
        let mut request = vec!["req", "-subj", &subject, "-keyout", &key_file, "-out", &csr];
        request.extend(key);
        openssl(dir, &request);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ],
        );
    }
    Certificates {
        ca: dir.join("ca.pem"),
        server: (dir.join("server.pem"), dir.join("server.key")),
        client: (dir.join("client.pem"), dir.join("client.key")),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// kcat over TLS, trusting `ca`, with a client certificate if given.
fn kcat(bootstrap: &str, ca: &Path, client: Option<&(PathBuf, PathBuf)>, args: &[&str]) -> Command {
    let mut kcat = Command::new("kcat");
    kcat.args(["-b", bootstrap, "-X", "security.protocol=SSL"]);
    kcat.args(["-X", &format!("ssl.ca.location={}", path(ca))]);
    if let Some((cert, key)) = client {
        kcat.args(["-X", &format!("ssl.certificate.location={}", path(cert))]);
        kcat.args(["-X", &format!("ssl.key.location={}", path(key))]);
    }
    kcat.args(args);
    kcat
}

#[test]
fn confluent_kafka_and_kcat_produce_and_consume_over_tls() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = certificates(dir.path());
    let door = Door::start_with(
        &[],
        &["--tls-cert", path(&certs.server.0), "--tls-key", path(&certs.server.1)],
    );
    let mut produce = Command::new("python3");
    produce.arg(script("kafka-confluent.py")).args(["produce", &door.bootstrap(), "secret", "20"]);
    produce.env("KAFKA_SSL_CA", &certs.ca);
    success(&run(produce, ""), "confluent produce over SSL");
    let mut consume = Command::new("python3");
    consume.arg(script("kafka-confluent.py"));
    consume.args(["consume", &door.bootstrap(), "secret", "tls-readers", "20"]);
    consume.env("KAFKA_SSL_CA", &certs.ca);
    let out = success(&run(consume, ""), "confluent consume over SSL");
    assert_eq!(out.lines().count(), 20, "{out}");
    assert_eq!(out.lines().next(), Some("key-0=message-0@0"));

    let bootstrap = door.bootstrap();
    success(&run(kcat(&bootstrap, &certs.ca, None, &["-P", "-t", "secret"]), "21\n"), "kcat -P");
    let read = success(
        &run(kcat(&bootstrap, &certs.ca, None, &["-C", "-e", "-t", "secret", "-o", "20"]), ""),
        "kcat -C",
    );
    assert_eq!(read, "21\n");

    // A client that does not speak TLS gets nothing from the port.
    let mut plain = Command::new("kcat");
    plain.args(["-L", "-b", &bootstrap, "-m", "3"]);
    assert!(!run(plain, "").status.success(), "a plaintext client was answered");
    let log = door.stop();
    assert!(log.contains("TLS handshake"), "{log}");
}

#[test]
fn with_a_client_ca_only_clients_with_its_certificates_get_in() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = certificates(dir.path());
    let door = Door::start_with(
        &[],
        &[
            "--tls-cert",
            path(&certs.server.0),
            "--tls-key",
            path(&certs.server.1),
            "--tls-client-ca",
            path(&certs.ca),
        ],
    );
    let bootstrap = door.bootstrap();
    let with = kcat(&bootstrap, &certs.ca, Some(&certs.client), &["-P", "-t", "mutual"]);
    success(&run(with, "in\n"), "kcat -P with a client certificate");
    let without =
        kcat(&bootstrap, &certs.ca, None, &["-P", "-t", "mutual", "-X", "message.timeout.ms=5000"]);
    assert!(!run(without, "out\n").status.success(), "a client without a certificate produced");
    let read = kcat(&bootstrap, &certs.ca, Some(&certs.client), &["-C", "-e", "-t", "mutual"]);
    assert_eq!(success(&run(read, ""), "kcat -C"), "in\n");
    door.stop();
}

#[test]
fn sasl_ssl_logins_go_over_tls() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let certs = certificates(dir.path());
    let hash = Command::new(binary("broker"))
        .arg("hash-password")
        .env("BROKER_PASSWORD", "pw")
        .output()
        .expect("hash a password");
    let hash = String::from_utf8(hash.stdout).expect("UTF-8").trim().to_owned();
    let users = dir.path().join("users.toml");
    let text = format!(
        "[users.alice]\npassword_hash = \"{hash}\"\ntopics = {{ produce = [\"orders\"], consume = [\"orders\"] }}\n\
         groups = {{ consume = [\"g\"], admin = [\"g\"] }}\n"
    );
    std::fs::write(&users, text).expect("write the users file");
    let broker = BrokerProcess::start(&binary("broker"), &["--auth", path(&users)]);
    let mut command = Command::new(GATEWAY);
    command.args(["--listen", "127.0.0.1:0", "--connect", &broker.endpoint]);
    command.args(["--tls-cert", path(&certs.server.0), "--tls-key", path(&certs.server.1)]);
    let gateway = BrokerProcess::spawn(command);
    let client = |args: &[&str], password: &str| {
        let mut python = Command::new("python3");
        python.arg(script("kafka-confluent.py")).args(args);
        python.env("KAFKA_SSL_CA", &certs.ca).env("KAFKA_USER", "alice");
        python.env("KAFKA_PASSWORD", password);
        run(python, "")
    };
    success(&client(&["produce", &gateway.endpoint, "orders", "3"], "pw"), "SASL_SSL produce");
    let read = success(
        &client(&["consume", &gateway.endpoint, "orders", "g", "3"], "pw"),
        "SASL_SSL consume",
    );
    assert_eq!(read.lines().count(), 3, "{read}");
    let wrong = client(&["produce", &gateway.endpoint, "orders", "1"], "wrong");
    assert!(!wrong.status.success(), "{wrong:?}");
    gateway.interrupt();
    broker.interrupt();
}
