//! A minimal HTTP/1.1 webhook receiver for the delivery benchmark: answers
//! every request `200` with an empty body on kept-alive connections and
//! hands each request's delivery id and body to a callback. It reads
//! `Content-Length` bodies only, which is what the platform sends, and does
//! as little as possible so the measurement is of the sender.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One request as the receiver saw it.
#[derive(Debug)]
pub struct Received {
    pub delivery_id: String,
    pub body: Vec<u8>,
}

pub type OnRequest = Arc<dyn Fn(Received) + Send + Sync>;

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, on_request: OnRequest) {
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let cb = on_request.clone();
        tokio::spawn(async move {
            let _ = connection(stream, cb).await;
        });
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

async fn connection(stream: TcpStream, on_request: OnRequest) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(16 * 1024, read);
    let mut line = String::new();
    loop {
        let mut length = 0usize;
        let mut delivery_id = String::new();
        let mut first = true;
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-codeb-delivery-id") {
                    delivery_id = v.to_owned();
                }
            }
        }
        let mut body = vec![0; length];
        read.read_exact(&mut body).await?;
        on_request(Received { delivery_id, body });
        write.write_all(OK).await?;
    }
}
