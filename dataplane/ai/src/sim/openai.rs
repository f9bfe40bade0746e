//! OpenAI Realtime simulator (GA shapes): `/v1/realtime?model=` with a
//! bearer key, `session.created` first, JSON in text frames, the full event
//! sequence of a turn with `event_id` / `item_id` / `response_id`, the
//! function-call flow, `response.done` with usage, and the vendor's errors:
//! a bad key gets an `invalid_api_key` error event then close 3000; a beta
//! client (`OpenAI-Beta` header or beta session fields) gets close 4000.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
use super::script::{Act, Conversation, Reply, Script, ToolUse, synth};
use super::{Shared, SimRecord, audio_tokens, pcm16, pcm16_bytes, pieces};
use crate::config::OPENAI_PATH;
use crate::error::EngineError;
use crate::transport::{Io, Ws, ws_config};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    Pcmu,
    Pcma,
    Pcm24,
}

impl Fmt {
    fn parse(v: Option<&Value>) -> Result<Self, String> {
        let Some(v) = v else { return Ok(Fmt::Pcm24) };
        match v.get("type").and_then(Value::as_str) {
            Some("audio/pcmu") => Ok(Fmt::Pcmu),
            Some("audio/pcma") => Ok(Fmt::Pcma),
            Some("audio/pcm") => match v.get("rate").and_then(Value::as_u64) {
                None | Some(24_000) => Ok(Fmt::Pcm24),
                Some(_) => Err("Invalid value for 'rate': only 24000 is supported.".into()),
            },
            _ => Err("Invalid value for 'format.type'.".into()),
        }
    }

    fn rate(self) -> u32 {
        if self == Fmt::Pcm24 { 24_000 } else { 8_000 }
    }

    fn decode(self, b: &[u8]) -> Vec<i16> {
        match self {
            Fmt::Pcmu => b.iter().map(|&x| ulaw_decode(x)).collect(),
            Fmt::Pcma => b.iter().map(|&x| alaw_decode(x)).collect(),
            Fmt::Pcm24 => pcm16(b),
        }
    }

    fn encode(self, s: &[i16]) -> Vec<u8> {
        match self {
            Fmt::Pcmu => s.iter().map(|&x| ulaw_encode(x)).collect(),
            Fmt::Pcma => s.iter().map(|&x| alaw_encode(x)).collect(),
            Fmt::Pcm24 => pcm16_bytes(s),
        }
    }
}

struct Handshake {
    model: Option<String>,
    auth: Option<String>,
    beta: bool,
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
pub(crate) async fn serve_connection(
    io: Box<dyn Io>,
    shared: Arc<Shared>,
) -> Result<(), EngineError> {
    let mut hs = Handshake {
        model: None,
        auth: None,
        beta: false,
    };
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != OPENAI_PATH {
            let mut e = ErrorResponse::new(Some("Not Found".into()));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return Err(e);
        }
        hs.model = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "model")
                .map(|(_, v)| v.into_owned())
        });
        hs.auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        hs.beta = req.headers().contains_key("openai-beta");
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(ws_config()))
        .await
        .map_err(EngineError::transport)?;
    let mut c = Conn::new(Arc::clone(&shared));
    if !shared.key_ok(hs.auth.as_deref().and_then(|a| a.strip_prefix("Bearer "))) {
        shared.log.push(SimRecord::Rejected { code: 3000 });
        let shown: String = hs
            .auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|k| format!("{}***", k.chars().take(4).collect::<String>()))
            .unwrap_or_default();
        c.error(
            &mut ws,
            "invalid_request_error",
            "invalid_api_key",
            &format!("Incorrect API key provided: {shown}."),
        )
        .await?;
        return close(
            &mut ws,
            &shared,
            3000,
            "invalid_request_error.invalid_api_key",
        )
        .await;
    }
    if hs.beta {
        return close(&mut ws, &shared, 4000, "beta_api_shape_disabled").await;
    }
    let Some(model) = hs.model.filter(|m| !m.is_empty()) else {
        c.error(
            &mut ws,
            "invalid_request_error",
            "missing_model",
            "Missing required parameter: 'model'.",
        )
        .await?;
        return close(
            &mut ws,
            &shared,
            3000,
            "invalid_request_error.missing_model",
        )
        .await;
    };
    shared.log.push(SimRecord::Connected { resumed: false });
    let sid = format!("sess_{:08}", shared.next_id());
    let created = json!({"type": "session.created", "event_id": c.ev(),
        "session": {"type": "realtime", "object": "realtime.session", "id": sid, "model": model,
                    "output_modalities": ["audio"], "instructions": "",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": {"type": "server_vad"}},
                              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"}}}});
    c.send(&mut ws, created).await?;
    c.run(&mut ws).await
}

async fn close(ws: &mut Ws, shared: &Shared, code: u16, reason: &str) -> Result<(), EngineError> {
    shared.log.push(SimRecord::Closed { code });
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.close(Some(frame)).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

struct Conn {
    shared: Arc<Shared>,
    /// This connection as the config's observer sees it (from its first
    /// `session.update`).
    observed: Option<super::ObservedConn>,
    script: Option<Script>,
    session: Value,
    in_fmt: Fmt,
    out_fmt: Fmt,
    prompt_tokens: u64,
    heard_ms_unreported: u64,
    last_item: Option<String>,
    /// The `event_id` of the client event being handled, which an error
    /// it causes names (as OpenAI's do).
    client_event: Option<String>,
    speech_item: Option<String>,
    pending_tool: Option<String>,
    after_tool_output: bool,
    /// With `late_transcripts`: the caller's transcript (its item and
    /// text), sent once the response to it is done.
    late_heard: Option<(String, String, u32)>,
    /// The assistant audio items of this connection and their length in
    /// ms (the latest [`MAX_AUDIO_ITEMS`]), which a truncate must name
    /// and stay within.
    audio_items: std::collections::VecDeque<(String, u64)>,
    /// Client messages read while a response was under way, handled
    /// after it (in order), and whether the client went meanwhile.
    deferred: std::collections::VecDeque<String>,
    peer_gone: bool,
}

/// Assistant audio items a connection remembers for truncates.
const MAX_AUDIO_ITEMS: usize = 64;

impl Conn {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            observed: None,
            script: None,
            session: Value::Null,
            in_fmt: Fmt::Pcm24,
            out_fmt: Fmt::Pcm24,
            prompt_tokens: 0,
            heard_ms_unreported: 0,
            last_item: None,
            client_event: None,
            speech_item: None,
            pending_tool: None,
            after_tool_output: false,
            late_heard: None,
            audio_items: std::collections::VecDeque::new(),
            deferred: std::collections::VecDeque::new(),
            peer_gone: false,
        }
    }

    fn ev(&self) -> String {
        format!("event_{:08}", self.shared.next_id())
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}_{:08}", self.shared.next_id())
    }

    async fn send(&self, ws: &mut Ws, v: Value) -> Result<(), EngineError> {
        ws.send(Message::text(v.to_string()))
            .await
            .map_err(EngineError::transport)
    }

    async fn error(
        &self,
        ws: &mut Ws,
        kind: &str,
        code: &str,
        message: &str,
    ) -> Result<(), EngineError> {
        let v = json!({"type": "error", "event_id": self.ev(),
            "error": {"type": kind, "code": code, "message": message, "param": null, "event_id": self.client_event}});
        self.shared.log.push(SimRecord::ClientError {
            code: code.to_owned(),
        });
        self.send(ws, v).await
    }

    async fn run(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        loop {
            let next = match self.deferred.pop_front() {
                Some(t) => Some(Ok(Message::Text(t.into()))),
                None if self.peer_gone => None,
                None => ws.next().await,
            };
            let text = match next {
                Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                Some(Ok(Message::Binary(_))) => {
                    self.error(
                        ws,
                        "invalid_request_error",
                        "invalid_json",
                        "Binary frames are not supported.",
                    )
                    .await?;
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => continue,
            };
            let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                self.error(
                    ws,
                    "invalid_request_error",
                    "invalid_json",
                    "The server could not parse the JSON.",
                )
                .await?;
                continue;
            };
            let read_at = std::time::Instant::now();
            self.client_event = msg
                .get("event_id")
                .and_then(Value::as_str)
                .map(|e| e.chars().take(64).collect());
            let kind = msg
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            match kind.as_str() {
                "session.update" => {
                    if let Some(code) = self.session_update(ws, &msg).await? {
                        return close(ws, &self.shared, code, "beta_api_shape_disabled").await;
                    }
                }
                "input_audio_buffer.append" => {
                    let Some(script) = self.script.as_mut() else {
                        self.error(
                            ws,
                            "invalid_request_error",
                            "session_not_configured",
                            "Send session.update first.",
                        )
                        .await?;
                        continue;
                    };
                    let Ok(bytes) =
                        B64.decode(msg.get("audio").and_then(Value::as_str).unwrap_or(""))
                    else {
                        self.error(
                            ws,
                            "invalid_request_error",
                            "invalid_value",
                            "Invalid 'audio': not base64.",
                        )
                        .await?;
                        continue;
                    };
                    let samples = self.in_fmt.decode(&bytes);
                    self.shared.observe_heard(
                        self.observed.as_ref(),
                        &samples,
                        self.in_fmt.rate(),
                        read_at,
                    );
                    self.heard_ms_unreported +=
                        samples.len() as u64 * 1000 / u64::from(self.in_fmt.rate());
                    let acts = script.push_audio(&samples, self.in_fmt.rate());
                    for a in acts {
                        self.act(ws, a).await?;
                    }
                }
                "input_audio_buffer.commit"
                | "input_audio_buffer.clear"
                | "output_audio_buffer.clear" => {}
                "conversation.item.create" => {
                    let item = msg.get("item").cloned().unwrap_or(Value::Null);
                    if item.get("type").and_then(Value::as_str) == Some("function_call_output") {
                        let call_id = item
                            .get("call_id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        if self.pending_tool.as_deref() != Some(call_id.as_str()) {
                            self.error(
                                ws,
                                "invalid_request_error",
                                "invalid_value",
                                "Tool call ID not found in conversation.",
                            )
                            .await?;
                            continue;
                        }
                        self.pending_tool = None;
                        self.after_tool_output = true;
                        self.shared.log.push(SimRecord::ToolResponse {
                            call_id,
                            response: item.get("output").cloned().unwrap_or(Value::Null),
                        });
                    }
                    let id = self.id("item");
                    self.send(ws, json!({"type": "conversation.item.added", "event_id": self.ev(), "previous_item_id": self.last_item, "item": {"id": id, "type": item.get("type")}})).await?;
                    self.last_item = Some(id);
                }
                "response.create" => {
                    let reply = if std::mem::take(&mut self.after_tool_output) {
                        None
                    } else {
                        self.script.as_mut().and_then(Script::kickoff)
                    };
                    match reply {
                        Some(r) => self.speak(ws, r).await?,
                        None => self.empty_response(ws).await?,
                    }
                }
                "response.cancel" => {
                    self.error(
                        ws,
                        "invalid_request_error",
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                    )
                    .await?;
                }
                "conversation.item.truncate" => {
                    let item_id = msg
                        .get("item_id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let end = msg.get("audio_end_ms").and_then(Value::as_u64).unwrap_or(0);
                    // As the vendor: only an assistant audio item of this
                    // conversation, and not past its audio.
                    match self.audio_items.iter_mut().find(|(id, _)| *id == item_id) {
                        None => {
                            let m = format!(
                                "Invalid 'item_id': no assistant message with audio '{}'.",
                                item_id.chars().take(64).collect::<String>()
                            );
                            self.error(ws, "invalid_request_error", "invalid_value", &m)
                                .await?;
                        }
                        Some((_, len)) if end > *len => {
                            let m =
                                format!("Audio content of {len}ms is already shorter than {end}ms");
                            self.error(ws, "invalid_request_error", "invalid_value", &m)
                                .await?;
                        }
                        Some((_, len)) => {
                            *len = end;
                            self.shared.log.push(SimRecord::Truncated {
                                item_id: item_id.clone(),
                                audio_end_ms: end,
                            });
                            self.send(ws, json!({"type": "conversation.item.truncated", "event_id": self.ev(), "item_id": item_id, "content_index": 0, "audio_end_ms": end})).await?;
                        }
                    }
                }
                other => {
                    let m = format!(
                        "Invalid value: '{}'.",
                        other.chars().take(64).collect::<String>()
                    );
                    self.error(ws, "invalid_request_error", "invalid_value", &m)
                        .await?;
                }
            }
        }
    }

    /// Applies a `session.update`; `Some(4000)` for a beta-shaped one.
    async fn session_update(
        &mut self,
        ws: &mut Ws,
        msg: &Value,
    ) -> Result<Option<u16>, EngineError> {
        let s = msg.get("session").cloned().unwrap_or(Value::Null);
        if [
            "input_audio_format",
            "output_audio_format",
            "modalities",
            "input_audio_transcription",
        ]
        .iter()
        .any(|k| s.get(*k).is_some())
        {
            return Ok(Some(4000));
        }
        if s.get("type").and_then(Value::as_str) != Some("realtime") {
            self.error(
                ws,
                "invalid_request_error",
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
            )
            .await?;
            return Ok(None);
        }
        let fmts = Fmt::parse(s.pointer("/audio/input/format"))
            .and_then(|i| Ok((i, Fmt::parse(s.pointer("/audio/output/format"))?)));
        let (in_fmt, out_fmt) = match fmts {
            Ok(f) => f,
            Err(m) => {
                self.error(ws, "invalid_request_error", "invalid_value", &m)
                    .await?;
                return Ok(None);
            }
        };
        // OpenAI refuses a voice it does not have (a Gemini name among
        // them), and the session stays as it was.
        if let Some(v) = s.pointer("/audio/output/voice").and_then(Value::as_str) {
            let voices = codeb_types::Vendor::OpenAi
                .closed_voices()
                .unwrap_or_default();
            if !voices.contains(&v) {
                let m = format!(
                    "Invalid value: '{v}'. Supported values are: {}.",
                    voices
                        .iter()
                        .map(|v| format!("'{v}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.error(ws, "invalid_request_error", "invalid_value", &m)
                    .await?;
                return Ok(None);
            }
        }
        self.shared.log.push(SimRecord::Setup(s.clone()));
        self.in_fmt = in_fmt;
        self.out_fmt = out_fmt;
        if self.script.is_none() {
            let prompt = s.get("instructions").and_then(Value::as_str).unwrap_or("");
            self.prompt_tokens = prompt.split_whitespace().count() as u64;
            self.observed = self.shared.observed(prompt);
            let mut hearing = self.shared.cfg.hearing;
            if let Some(ms) = s
                .pointer("/audio/input/turn_detection/silence_duration_ms")
                .and_then(Value::as_u64)
            {
                hearing.end_silence = std::time::Duration::from_millis(ms.clamp(50, 10_000));
            }
            self.script = Some(Script::new(prompt, hearing, Conversation::default()));
        }
        self.session = s;
        self.send(
            ws,
            json!({"type": "session.updated", "event_id": self.ev(), "session": self.session}),
        )
        .await?;
        Ok(None)
    }

    async fn act(&mut self, ws: &mut Ws, act: Act) -> Result<(), EngineError> {
        match act {
            Act::SpeechStarted { at_ms } => {
                let item = self.id("item");
                self.speech_item = Some(item.clone());
                self.send(ws, json!({"type": "input_audio_buffer.speech_started", "event_id": self.ev(), "audio_start_ms": at_ms, "item_id": item})).await?;
            }
            Act::Interrupt { turn } => self.shared.log.push(SimRecord::Interrupted { turn }),
            Act::SpeechStopped {
                at_ms,
                utterance,
                heard_ms,
            } => {
                self.shared.log.push(SimRecord::Heard {
                    utterance,
                    ms: heard_ms,
                });
                let item = self.speech_item.take().unwrap_or_else(|| self.id("item"));
                self.send(ws, json!({"type": "input_audio_buffer.speech_stopped", "event_id": self.ev(), "audio_end_ms": at_ms, "item_id": item})).await?;
                self.send(ws, json!({"type": "input_audio_buffer.committed", "event_id": self.ev(), "previous_item_id": self.last_item, "item_id": item})).await?;
                let it = json!({"id": item, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                                "content": [{"type": "input_audio", "transcript": null}]});
                self.send(ws, json!({"type": "conversation.item.added", "event_id": self.ev(), "previous_item_id": self.last_item, "item": it})).await?;
                self.send(ws, json!({"type": "conversation.item.done", "event_id": self.ev(), "previous_item_id": self.last_item, "item": it})).await?;
                self.last_item = Some(item.clone());
                let t = super::script::heard_text(heard_ms);
                if self.shared.cfg.late_transcripts {
                    // It "may arrive before or after" the response.
                    self.late_heard = Some((item, t, heard_ms));
                } else {
                    self.transcribed(ws, &item, &t, heard_ms).await?;
                }
            }
            Act::Speak(r) => {
                if self.pending_tool.is_none() {
                    self.speak(ws, r).await?;
                }
            }
            Act::PlayoutDone { .. } => {}
        }
        Ok(())
    }

    fn usage(&mut self, audio_ms: u32) -> Value {
        let input = audio_tokens(std::mem::take(&mut self.heard_ms_unreported))
            + std::mem::take(&mut self.prompt_tokens);
        let output = audio_tokens(u64::from(audio_ms));
        self.shared.log.push(SimRecord::Usage {
            prompt: input,
            response: output,
            total: input + output,
        });
        json!({"total_tokens": input + output, "input_tokens": input, "output_tokens": output,
               "input_token_details": {"text_tokens": 0, "audio_tokens": input, "image_tokens": 0, "cached_tokens": 0},
               "output_token_details": {"text_tokens": 0, "audio_tokens": output}})
    }

    async fn empty_response(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        let rid = self.id("resp");
        self.send(ws, json!({"type": "response.created", "event_id": self.ev(), "response": {"object": "realtime.response", "id": rid, "status": "in_progress", "output": []}})).await?;
        let mut resp = json!({"object": "realtime.response", "id": rid, "status": "completed", "status_details": null, "output": []});
        if self.shared.cfg.send_usage {
            resp["usage"] = self.usage(0);
        }
        self.send(
            ws,
            json!({"type": "response.done", "event_id": self.ev(), "response": resp}),
        )
        .await
    }

    /// The caller's words in `item`, transcribed.
    async fn transcribed(
        &mut self,
        ws: &mut Ws,
        item: &str,
        t: &str,
        heard_ms: u32,
    ) -> Result<(), EngineError> {
        self.send(ws, json!({"type": "conversation.item.input_audio_transcription.delta", "event_id": self.ev(), "item_id": item, "content_index": 0, "delta": t})).await?;
        self.send(ws, json!({"type": "conversation.item.input_audio_transcription.completed", "event_id": self.ev(), "item_id": item, "content_index": 0, "transcript": t,
                             "usage": {"type": "duration", "seconds": f64::from(heard_ms) / 1000.0}})).await
    }

    /// The response `rid` stays under way for the configured window:
    /// what the client sends meanwhile is kept for after it, but a
    /// `response.create` is refused, as the vendor refuses it.
    async fn under_way(&mut self, ws: &mut Ws, rid: &str) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + self.shared.cfg.tool_response_window;
        while !self.peer_gone {
            let text = match tokio::time::timeout_at(until, ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_owned(),
                Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => {
                    self.peer_gone = true;
                    break;
                }
                Ok(Some(Ok(_))) => continue,
            };
            let msg = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
            if msg.get("type").and_then(Value::as_str) == Some("response.create") {
                self.client_event = msg
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(|e| e.chars().take(64).collect());
                let m = format!(
                    "Conversation already has an active response in progress: {rid}. \
                     Wait until the response is finished before creating a new one."
                );
                self.error(
                    ws,
                    "invalid_request_error",
                    "conversation_already_has_active_response",
                    &m,
                )
                .await?;
            } else if self.deferred.len() < 1024 {
                self.deferred.push_back(text);
            }
        }
        Ok(())
    }

    async fn speak(&mut self, ws: &mut Ws, r: Reply) -> Result<(), EngineError> {
        let rid = self.id("resp");
        let item = self.id("item");
        self.send(ws, json!({"type": "response.created", "event_id": self.ev(), "response": {"object": "realtime.response", "id": rid, "status": "in_progress", "output": []}})).await?;
        let msg_item = json!({"id": item, "object": "realtime.item", "type": "message", "role": "assistant", "status": "in_progress", "content": []});
        self.send(ws, json!({"type": "response.output_item.added", "event_id": self.ev(), "response_id": rid, "output_index": 0, "item": msg_item})).await?;
        self.send(ws, json!({"type": "response.content_part.added", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})).await?;
        let pcm = synth(r.turn, r.audio_ms, self.out_fmt.rate());
        let per_chunk =
            (self.out_fmt.rate() * self.shared.cfg.chunk_ms.clamp(10, 1000) / 1000) as usize;
        let chunks: Vec<&[i16]> = pcm.chunks(per_chunk).collect();
        let words = pieces(&r.text, chunks.len());
        self.shared.observe_says(self.observed.as_ref(), r.turn);
        for (i, c) in chunks.iter().enumerate() {
            let delta = B64.encode(self.out_fmt.encode(c));
            self.send(ws, json!({"type": "response.output_audio.delta", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0, "delta": delta})).await?;
            if let Some(w) = words.get(i) {
                self.send(ws, json!({"type": "response.output_audio_transcript.delta", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0, "delta": w})).await?;
            }
        }
        if self.audio_items.len() == MAX_AUDIO_ITEMS {
            self.audio_items.pop_front();
        }
        self.audio_items
            .push_back((item.clone(), u64::from(r.audio_ms)));
        self.shared.log.push(SimRecord::Said {
            turn: r.turn,
            text: r.text.clone(),
            audio_ms: r.audio_ms,
        });
        self.send(ws, json!({"type": "response.output_audio.done", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0})).await?;
        self.send(ws, json!({"type": "response.output_audio_transcript.done", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0, "transcript": r.text})).await?;
        self.send(ws, json!({"type": "response.content_part.done", "event_id": self.ev(), "response_id": rid, "item_id": item, "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": r.text}})).await?;
        let done_item = json!({"id": item, "object": "realtime.item", "type": "message", "role": "assistant", "status": "completed",
                               "content": [{"type": "output_audio", "transcript": r.text}]});
        self.send(ws, json!({"type": "response.output_item.done", "event_id": self.ev(), "response_id": rid, "output_index": 0, "item": done_item})).await?;
        self.last_item = Some(item);
        let mut output = vec![done_item];
        if let Some(tool) = r.tool {
            let call_id = format!("call_{:08}", self.shared.next_id());
            let fitem = self.id("item");
            let (name, args) = match tool {
                ToolUse::EndCall => ("end_call", json!({"reason": "finished"})),
                ToolUse::Transfer(user) => ("transfer_to_user", json!({"user": user})),
            };
            let args = args.to_string();
            let f = json!({"id": fitem, "object": "realtime.item", "type": "function_call", "status": "in_progress", "name": name, "call_id": call_id, "arguments": ""});
            self.send(ws, json!({"type": "response.output_item.added", "event_id": self.ev(), "response_id": rid, "output_index": 1, "item": f})).await?;
            self.send(ws, json!({"type": "response.function_call_arguments.delta", "event_id": self.ev(), "response_id": rid, "item_id": fitem, "output_index": 1, "call_id": call_id, "delta": args})).await?;
            let mut done = json!({"type": "response.function_call_arguments.done", "event_id": self.ev(), "response_id": rid, "item_id": fitem, "output_index": 1, "call_id": call_id, "arguments": args});
            if !self.shared.cfg.late_transcripts {
                // Without it, as some observe the real server send it
                // (the name is the output item's).
                done["name"] = json!(name);
            }
            self.send(ws, done).await?;
            let f = json!({"id": fitem, "object": "realtime.item", "type": "function_call", "status": "completed", "name": name, "call_id": call_id, "arguments": args});
            self.send(ws, json!({"type": "response.output_item.done", "event_id": self.ev(), "response_id": rid, "output_index": 1, "item": f})).await?;
            self.shared.log.push(SimRecord::ToolCall {
                turn: r.turn,
                name: name.into(),
                call_id: call_id.clone(),
            });
            self.pending_tool = Some(call_id);
            self.last_item = Some(fitem);
            output.push(f);
            self.under_way(ws, &rid).await?;
        }
        let mut resp = json!({"object": "realtime.response", "id": rid, "status": "completed", "status_details": null, "output": output});
        if self.shared.cfg.send_usage {
            resp["usage"] = self.usage(r.audio_ms);
        }
        self.send(
            ws,
            json!({"type": "response.done", "event_id": self.ev(), "response": resp}),
        )
        .await?;
        if let Some((item, t, heard_ms)) = self.late_heard.take() {
            self.transcribed(ws, &item, &t, heard_ms).await?;
        }
        Ok(())
    }
}
