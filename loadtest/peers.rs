//! The baseline targets' keepalive, spoken by the `sessions` scenario so the
//! same load can be driven at an MQTT broker or a NATS server: just enough
//! framing to open a session and ping it, not a client library.
//!
//! - MQTT 3.1.1: CONNECT (clean session, a keep-alive, a client id), CONNACK;
//!   then PINGREQ is the heartbeat and PINGRESP its reply.
//! - NATS: the server's `INFO` line, then `CONNECT {…}` and `PING`, answered
//!   `PONG`; then `PING`/`PONG` is the heartbeat. The server pings idle
//!   clients too; those pings are answered and not counted.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// MQTT control packet types (first byte, flags 0), MQTT 3.1.1 §2.2.1.
const CONNACK: u8 = 0x20;
const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: u8 = 0xD0;

/// The CONNECT packet for a clean session with `keepalive` seconds.
fn mqtt_connect_packet(client_id: &str, keepalive: u16) -> Vec<u8> {
    let id = client_id.as_bytes();
    // Variable header: protocol name "MQTT", level 4, flags (clean
    // session), keep-alive; payload: the client id.
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
    body.extend_from_slice(&keepalive.to_be_bytes());
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10];
    // Remaining length: 7 bits a byte, high bit = more follows (§2.2.3).
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

pub struct Mqtt {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Mqtt {
    /// CONNECT and wait for an accepting CONNACK.
    pub async fn connect(
        stream: TcpStream,
        client_id: &str,
        keepalive: u16,
    ) -> Result<Mqtt, &'static str> {
        let (r, mut writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(64, r);
        writer
            .write_all(&mqtt_connect_packet(client_id, keepalive))
            .await
            .map_err(|_| "write")?;
        let mut ack = [0u8; 4];
        reader.read_exact(&mut ack).await.map_err(|_| "closed")?;
        // CONNACK, remaining length 2, session-present flag, return code 0.
        if ack[0] != CONNACK || ack[1] != 2 || ack[3] != 0 {
            return Err("refused");
        }
        Ok(Mqtt { reader, writer })
    }

    pub async fn ping(&mut self) -> Result<(), &'static str> {
        self.writer.write_all(&PINGREQ).await.map_err(|_| "write")?;
        let mut resp = [0u8; 2];
        self.reader
            .read_exact(&mut resp)
            .await
            .map_err(|_| "closed")?;
        if resp != [PINGRESP, 0] {
            return Err("bad_reply");
        }
        Ok(())
    }

    /// A broker sends nothing unasked to a client with no subscription:
    /// whatever arrives while idle ends the session.
    pub async fn wait_event(&mut self) -> Result<bool, &'static str> {
        let mut b = [0u8; 1];
        match self.reader.read(&mut b).await {
            Ok(0) | Err(_) => Err("closed"),
            Ok(_) => Err("bad_reply"),
        }
    }
}

pub struct Nats {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

/// Sent once after the server's INFO: no `+OK` acks, no pedantic checks.
const NATS_CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";

impl Nats {
    /// Read INFO, send CONNECT and PING, wait for PONG.
    pub async fn connect(stream: TcpStream) -> Result<Nats, &'static str> {
        let (r, writer) = stream.into_split();
        let mut n = Nats {
            reader: BufReader::with_capacity(4096, r),
            writer,
            line: String::with_capacity(64),
        };
        n.read_line().await?;
        if !n.line.starts_with("INFO ") {
            return Err("bad_reply");
        }
        n.writer
            .write_all(NATS_CONNECT)
            .await
            .map_err(|_| "write")?;
        n.until_pong().await?;
        Ok(n)
    }

    async fn read_line(&mut self) -> Result<(), &'static str> {
        self.line.clear();
        match self.reader.read_line(&mut self.line).await {
            Ok(0) | Err(_) => Err("closed"),
            Ok(_) => Ok(()),
        }
    }

    /// Read until the server's PONG, answering its own PINGs meanwhile.
    async fn until_pong(&mut self) -> Result<(), &'static str> {
        loop {
            self.read_line().await?;
            match self.line.trim_end() {
                "PONG" => return Ok(()),
                "PING" => self.pong().await?,
                "+OK" => {}
                l if l.starts_with("-ERR") => return Err("error_reply"),
                _ => return Err("bad_reply"),
            }
        }
    }

    async fn pong(&mut self) -> Result<(), &'static str> {
        self.writer
            .write_all(b"PONG\r\n")
            .await
            .map_err(|_| "write")
    }

    pub async fn ping(&mut self) -> Result<(), &'static str> {
        self.writer
            .write_all(b"PING\r\n")
            .await
            .map_err(|_| "write")?;
        self.until_pong().await
    }

    /// While idle: answer the server's PING (`Ok(false)`: nothing else to
    /// do); anything else ends the session.
    pub async fn wait_event(&mut self) -> Result<bool, &'static str> {
        self.read_line().await?;
        match self.line.trim_end() {
            "PING" => self.pong().await.map(|_| false),
            l if l.starts_with("-ERR") => Err("error_reply"),
            _ => Err("bad_reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_mqtt_3_1_1() {
        let p = mqtt_connect_packet("t1", 60);
        assert_eq!(
            p,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b't', b'1'
            ]
        );
    }

    #[test]
    fn long_remaining_length_takes_two_bytes() {
        let id = "x".repeat(200);
        let p = mqtt_connect_packet(&id, 60);
        // 12 bytes of header fields + 200 = 212 = 0xD4 -> [0xD4 & 0x7F | 0x80, 1].
        assert_eq!(&p[..3], &[0x10, 0xD4, 0x01]);
        assert_eq!(p.len(), 3 + 212);
    }
}
