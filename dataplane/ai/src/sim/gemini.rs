//! Gemini Live simulator: `…BidiGenerateContent?key=`, `setup` first,
//! JSON in **binary** frames, close 1007 for a bad key or request, `goAway`
//! then close 1008 at the end of a connection's lifetime, and session
//! resumption that continues the conversation.

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

use super::script::{Act, Conversation, Reply, Script, ToolUse, synth};
use super::{Shared, SimRecord, audio_tokens, pcm16, pcm16_bytes, pieces};
use crate::config::GEMINI_PATH;
use crate::error::EngineError;
use crate::transport::{Io, Ws, ws_config};

/// The close reason Google sends for a bad key.
pub const BAD_KEY_REASON: &str = "API key not valid. Please pass a valid API key.";
/// Output sample rate.
const OUT_RATE: u32 = 24_000;
/// How long a client may take to send `setup`.
const SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A proto3 JSON field by its camelCase or snake_case name.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
pub(crate) async fn serve_connection(
    io: Box<dyn Io>,
    shared: Arc<Shared>,
) -> Result<(), EngineError> {
    let mut key = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != GEMINI_PATH {
            let mut e = ErrorResponse::new(Some("Not Found".into()));
            *e.status_mut() = StatusCode::NOT_FOUND;
            return Err(e);
        }
        key = req.uri().query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "key")
                .map(|(_, v)| v.into_owned())
        });
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async_with_config(io, callback, Some(ws_config()))
        .await
        .map_err(EngineError::transport)?;
    let first = tokio::time::timeout(SETUP_WAIT, next_json(&mut ws)).await;
    let setup = match first {
        Ok(Ok(Some(v))) => match v.get("setup") {
            Some(s) => s.clone(),
            None => return close(&mut ws, &shared, 1007, "The first message must be setup.").await,
        },
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(reason)) => return close(&mut ws, &shared, 1007, &reason).await,
        Err(_) => return close(&mut ws, &shared, 1008, "setup timeout").await,
    };
    if !shared.key_ok(key.as_deref()) {
        shared.log.push(SimRecord::Rejected { code: 1007 });
        return close(&mut ws, &shared, 1007, BAD_KEY_REASON).await;
    }
    shared.log.push(SimRecord::Setup(setup.clone()));
    if let Err(reason) = check_setup(&setup) {
        return close(&mut ws, &shared, 1007, &reason).await;
    }
    let prompt = field(&setup, "systemInstruction", "system_instruction")
        .and_then(|si| si.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<String>()
        })
        .unwrap_or_default();
    let resumption = field(&setup, "sessionResumption", "session_resumption");
    let handle = resumption
        .and_then(|r| r.get("handle"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty());
    let conv = match handle {
        Some(h) => match shared.restore(h) {
            Some(c) => c,
            None => {
                return close(&mut ws, &shared, 1007, "Invalid session resumption handle.").await;
            }
        },
        None => Conversation::default(),
    };
    shared.log.push(SimRecord::Connected {
        resumed: handle.is_some(),
    });
    // The client's VAD settings, where given, override the simulator's.
    let ric = field(&setup, "realtimeInputConfig", "realtime_input_config");
    let mut hearing = shared.cfg.hearing;
    if let Some(ms) = ric
        .and_then(|r| {
            field(
                r,
                "automaticActivityDetection",
                "automatic_activity_detection",
            )
        })
        .and_then(|a| field(a, "silenceDurationMs", "silence_duration_ms"))
        .and_then(Value::as_u64)
    {
        hearing.end_silence = std::time::Duration::from_millis(ms.clamp(50, 10_000));
    }
    let interrupts = ric
        .and_then(|r| field(r, "activityHandling", "activity_handling"))
        .and_then(Value::as_str)
        != Some("NO_INTERRUPTION");
    let mut conn = Conn {
        observed: shared.observed(&prompt),
        script: Script::new(&prompt, hearing, conv),
        interrupts,
        prompt_tokens: prompt.split_whitespace().count() as u64,
        resumable: resumption.is_some(),
        shared: Arc::clone(&shared),
        pending_tool: None,
        open_turn: None,
        heard_ms_unreported: 0,
        go_away_sent: false,
        usage_due: None,
    };
    if let (Some(gate), Some(_)) = (&shared.cfg.resume_gate, handle) {
        // A closed gate lets everything through.
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
    }
    send(&mut ws, json!({"setupComplete": {}})).await?;
    conn.resumption_update(&mut ws).await?;
    conn.run(&mut ws).await
}

fn check_setup(setup: &Value) -> Result<(), String> {
    let model = setup.get("model").and_then(Value::as_str).unwrap_or("");
    if !model.starts_with("models/") || model.len() <= "models/".len() {
        return Err("Request contains an invalid argument.".into());
    }
    if let Some(gc) = field(setup, "generationConfig", "generation_config") {
        for k in ["inputAudioTranscription", "outputAudioTranscription"] {
            if gc.get(k).is_some() {
                return Err(format!(
                    "Invalid JSON payload received. Unknown name \"{k}\" at 'setup.generation_config': Cannot find field."
                ));
            }
        }
        let modalities = field(gc, "responseModalities", "response_modalities");
        let audio = match modalities {
            None => true,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("audio"),
            Some(Value::Array(a)) => a
                .iter()
                .any(|m| m.as_str().is_some_and(|s| s.eq_ignore_ascii_case("audio"))),
            Some(_) => false,
        };
        if !audio {
            return Err("Request contains an invalid argument.".into());
        }
    }
    Ok(())
}

/// Next JSON message (text or binary); `Ok(None)` when the client left.
async fn next_json(ws: &mut Ws) -> Result<Option<Value>, String> {
    loop {
        let bytes = match ws.next().await {
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
            Some(Ok(Message::Binary(b))) => b.to_vec(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
            Some(Ok(_)) => continue,
        };
        return match serde_json::from_slice::<Value>(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err("Invalid JSON payload received.".into()),
        };
    }
}

async fn send(ws: &mut Ws, v: Value) -> Result<(), EngineError> {
    ws.send(Message::binary(v.to_string().into_bytes()))
        .await
        .map_err(EngineError::transport)
}

async fn close(ws: &mut Ws, shared: &Shared, code: u16, reason: &str) -> Result<(), EngineError> {
    shared.log.push(SimRecord::Closed { code });
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.close(Some(frame)).await;
    // Let the client read the close frame before the socket goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

struct Conn {
    /// This connection as the config's observer sees it.
    observed: Option<super::ObservedConn>,
    script: Script,
    /// `activityHandling` is not `NO_INTERRUPTION`.
    interrupts: bool,
    prompt_tokens: u64,
    resumable: bool,
    shared: Arc<Shared>,
    /// Tool call awaiting its response: (id, turn, audio ms).
    pending_tool: Option<(String, u32, u32)>,
    /// The turn whose playout is running; `true` once it has played out.
    open_turn: Option<(u32, bool)>,
    heard_ms_unreported: u64,
    go_away_sent: bool,
    /// The usage of the turn whose `turnComplete` is still to come.
    usage_due: Option<Value>,
}

impl Conn {
    async fn run(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        loop {
            let msg = match next_json(ws).await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(reason) => return close(ws, &self.shared, 1007, &reason).await,
            };
            let read_at = std::time::Instant::now();
            if let Some(ri) = field(&msg, "realtimeInput", "realtime_input") {
                let chunk = ri
                    .get("audio")
                    .or_else(|| field(ri, "mediaChunks", "media_chunks").and_then(|c| c.get(0)));
                if let Some(chunk) = chunk {
                    let mime = field(chunk, "mimeType", "mime_type")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let Some(rate) = input_rate(mime) else {
                        return close(ws, &self.shared, 1007, "Unsupported audio mime type.").await;
                    };
                    let data = chunk.get("data").and_then(Value::as_str).unwrap_or("");
                    let Ok(bytes) = B64.decode(data) else {
                        return close(ws, &self.shared, 1007, "Invalid audio data.").await;
                    };
                    let samples = pcm16(&bytes);
                    self.shared
                        .observe_heard(self.observed.as_ref(), &samples, rate, read_at);
                    self.heard_ms_unreported += samples.len() as u64 * 1000 / u64::from(rate);
                    let acts = self.script.push_audio(&samples, rate);
                    for act in acts {
                        self.act(ws, act).await?;
                    }
                    if let Some(code) = self.lifetime(ws).await? {
                        return close(ws, &self.shared, code, "Connection lifetime reached.").await;
                    }
                } else if ri.get("text").is_some() {
                    self.kickoff(ws).await?;
                }
            } else if let Some(cc) = field(&msg, "clientContent", "client_content") {
                if field(cc, "turnComplete", "turn_complete").and_then(Value::as_bool) == Some(true)
                {
                    self.kickoff(ws).await?;
                }
            } else if let Some(tr) = field(&msg, "toolResponse", "tool_response") {
                let responses = field(tr, "functionResponses", "function_responses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for r in responses {
                    let id = r.get("id").and_then(Value::as_str).unwrap_or("");
                    match self.pending_tool.take() {
                        Some((pid, turn, audio_ms)) if pid == id => {
                            self.shared.log.push(SimRecord::ToolResponse {
                                call_id: pid,
                                response: r.get("response").cloned().unwrap_or(Value::Null),
                            });
                            self.finish_generation(ws, audio_ms).await?;
                            if self.open_turn == Some((turn, true)) {
                                self.open_turn = None;
                                self.turn_complete(ws).await?;
                            }
                        }
                        other => {
                            self.pending_tool = other;
                            return close(
                                ws,
                                &self.shared,
                                1007,
                                "Function response id does not match a pending call.",
                            )
                            .await;
                        }
                    }
                }
            } else if msg.get("setup").is_some() {
                return close(ws, &self.shared, 1007, "setup may only be sent once.").await;
            } else {
                return close(
                    ws,
                    &self.shared,
                    1007,
                    "Invalid JSON payload received. Unknown message.",
                )
                .await;
            }
        }
    }

    async fn kickoff(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        if self.pending_tool.is_none()
            && let Some(r) = self.script.kickoff()
        {
            self.speak(ws, r).await?;
        }
        Ok(())
    }

    async fn act(&mut self, ws: &mut Ws, act: Act) -> Result<(), EngineError> {
        match act {
            Act::SpeechStarted { .. } => {}
            Act::SpeechStopped {
                utterance,
                heard_ms,
                ..
            } => {
                self.shared.log.push(SimRecord::Heard {
                    utterance,
                    ms: heard_ms,
                });
            }
            Act::Interrupt { turn } => {
                // A turn ending in a tool call waits for the tool, not the caller.
                if self.interrupts && self.pending_tool.is_none() && self.open_turn.is_some() {
                    self.open_turn = None;
                    self.shared.log.push(SimRecord::Interrupted { turn });
                    send(ws, json!({"serverContent": {"interrupted": true}})).await?;
                    self.turn_complete(ws).await?;
                }
            }
            Act::Speak(r) => self.speak(ws, r).await?,
            Act::PlayoutDone { turn } => {
                if self.open_turn == Some((turn, false)) {
                    if self.pending_tool.is_some() {
                        self.open_turn = Some((turn, true));
                    } else {
                        self.open_turn = None;
                        self.turn_complete(ws).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn speak(&mut self, ws: &mut Ws, r: Reply) -> Result<(), EngineError> {
        // With `late_transcripts`, the caller's transcript comes in pieces
        // with no ordering against the model's answer (as Google's may):
        // the first half before the answer's audio, the rest after the
        // answer's `generationComplete` (after its first chunk when it
        // ends in a tool call).
        let late = self.shared.cfg.late_transcripts;
        let (heard_early, heard_late) = match r.input_transcript() {
            Some(t) if !late => (Some(t), None),
            Some(t) => {
                let cut = t[..t.len() / 2].rfind(' ').map_or(0, |i| i + 1);
                (Some(t[..cut].to_owned()), Some(t[cut..].to_owned()))
            }
            None => (None, None),
        };
        let transcribed = |t: &str| json!({"serverContent": {"inputTranscription": {"text": t}}});
        if let Some(t) = heard_early.filter(|t| !t.is_empty()) {
            send(ws, transcribed(&t)).await?;
        }
        let pcm = synth(r.turn, r.audio_ms, OUT_RATE);
        let per_chunk = (OUT_RATE * self.shared.cfg.chunk_ms.clamp(10, 1000) / 1000) as usize;
        let chunks: Vec<&[i16]> = pcm.chunks(per_chunk).collect();
        let mut words = pieces(&r.text, chunks.len());
        // The output transcript's last piece may follow
        // `generationComplete` (only `turnComplete` ends the turn).
        let last_word = if late && r.tool.is_none() && words.len() > 1 {
            words.pop()
        } else {
            None
        };
        self.shared.observe_says(self.observed.as_ref(), r.turn);
        let mut heard_late = heard_late.filter(|t| !t.is_empty());
        let mut after_generation = None;
        if r.tool.is_none() {
            after_generation = heard_late.take();
        }
        for (i, c) in chunks.iter().enumerate() {
            let data = B64.encode(pcm16_bytes(c));
            send(
                ws,
                json!({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}}}),
            )
            .await?;
            if let Some(t) = heard_late.take() {
                send(ws, transcribed(&t)).await?;
            }
            if let Some(w) = words.get(i) {
                send(
                    ws,
                    json!({"serverContent": {"outputTranscription": {"text": w}}}),
                )
                .await?;
            }
        }
        if let Some(t) = heard_late {
            send(ws, transcribed(&t)).await?;
        }
        self.shared.log.push(SimRecord::Said {
            turn: r.turn,
            text: r.text.clone(),
            audio_ms: r.audio_ms,
        });
        self.open_turn = Some((r.turn, false));
        match r.tool {
            Some(tool) => {
                let call_id = format!("fc-{}", self.shared.next_id());
                let (name, args) = match tool {
                    ToolUse::EndCall => ("end_call", json!({"reason": "finished"})),
                    ToolUse::Transfer(user) => ("transfer_to_user", json!({"user": user})),
                };
                self.shared.log.push(SimRecord::ToolCall {
                    turn: r.turn,
                    name: name.into(),
                    call_id: call_id.clone(),
                });
                send(ws, json!({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})).await?;
                self.pending_tool = Some((call_id, r.turn, r.audio_ms));
            }
            None => {
                self.finish_generation(ws, r.audio_ms).await?;
                if let Some(t) = after_generation {
                    send(ws, transcribed(&t)).await?;
                }
                if let Some(w) = last_word {
                    send(
                        ws,
                        json!({"serverContent": {"outputTranscription": {"text": w}}}),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The turn's content is all sent: a resumption point, then
    /// `generationComplete`; the turn's usage waits for its
    /// `turnComplete` ([`Self::turn_complete`]), as Google sends it.
    async fn finish_generation(&mut self, ws: &mut Ws, audio_ms: u32) -> Result<(), EngineError> {
        self.resumption_update(ws).await?;
        if self.shared.cfg.send_usage {
            let prompt = audio_tokens(std::mem::take(&mut self.heard_ms_unreported))
                + std::mem::take(&mut self.prompt_tokens);
            let response = audio_tokens(u64::from(audio_ms));
            let total = prompt + response;
            self.shared.log.push(SimRecord::Usage {
                prompt,
                response,
                total,
            });
            self.usage_due = Some(json!({
                "promptTokenCount": prompt, "responseTokenCount": response, "totalTokenCount": total,
                "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": response}]
            }));
        }
        send(ws, json!({"serverContent": {"generationComplete": true}})).await
    }

    /// `turnComplete`, with the usage of the turn it ends.
    async fn turn_complete(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        let mut msg = json!({"serverContent": {"turnComplete": true}});
        if let Some(u) = self.usage_due.take() {
            msg["usageMetadata"] = u;
        }
        send(ws, msg).await
    }

    async fn resumption_update(&mut self, ws: &mut Ws) -> Result<(), EngineError> {
        if self.resumable {
            let h = self.shared.save(self.script.conversation());
            send(
                ws,
                json!({"sessionResumptionUpdate": {"newHandle": h, "resumable": true}}),
            )
            .await?;
        }
        Ok(())
    }

    /// `goAway` before the lifetime ends; `Some(1008)` once it has.
    async fn lifetime(&mut self, ws: &mut Ws) -> Result<Option<u16>, EngineError> {
        let Some(life) = self.shared.cfg.connection_lifetime else {
            return Ok(None);
        };
        let life_ms = life.as_millis() as u64;
        let notice_ms = self.shared.cfg.go_away_notice.as_millis() as u64;
        let now = self.script.clock_ms();
        if now >= life_ms {
            return Ok(Some(1008));
        }
        if !self.go_away_sent && now + notice_ms >= life_ms {
            self.go_away_sent = true;
            self.shared.log.push(SimRecord::GoAway);
            let left = life_ms - now;
            send(
                ws,
                json!({"goAway": {"timeLeft": format!("{}.{:03}s", left / 1000, left % 1000)}}),
            )
            .await?;
        }
        Ok(None)
    }
}

/// `audio/pcm;rate=N` → N (16 kHz when unsaid).
fn input_rate(mime: &str) -> Option<u32> {
    let mut parts = mime.split(';').map(str::trim);
    if parts.next()? != "audio/pcm" {
        return None;
    }
    let mut rate = 16_000;
    for p in parts {
        if let Some(r) = p.strip_prefix("rate=") {
            rate = r.parse().ok().filter(|r| (8_000..=48_000).contains(r))?;
        }
    }
    Some(rate)
}
