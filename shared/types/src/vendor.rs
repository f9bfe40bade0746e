//! Which voice-AI vendor a call's `model` names, and that vendor's default
//! voice: a voice name means something only to its own vendor (Gemini's
//! `Aoede` is not an OpenAI Realtime voice, and OpenAI refuses a session
//! that names one).

/// A voice-AI vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// Google Gemini Live: the spec's vendor, and any model not OpenAI's.
    Gemini,
    /// OpenAI Realtime: `openai/<model>` or `gpt-<…>`.
    OpenAi,
}

/// The Gemini model used when a call names none (the spec's `model` is
/// optional; `live-voice-ai` and a bare `models/` mean "the default").
pub const GEMINI_DEFAULT_MODEL: &str = "models/gemini-2.5-flash-native-audio-preview-12-2025";

/// Longest model string accepted.
pub const MAX_MODEL_LEN: usize = 128;

/// A call's `model` as its vendor spells it: `models/gemini-…` for Gemini
/// Live, the bare model (`gpt-realtime`) for OpenAI Realtime. The one rule
/// the control plane checks a model by (400 when it is not one) and the
/// switch starts its engine by:
///
/// * `openai/<m>` or `gpt-<…>` → OpenAI Realtime, model `<m>` (or the whole
///   `gpt-…`);
/// * `models/gemini-<…>`, `gemini-<…>`, `google/gemini-<…>` → Gemini Live;
/// * empty, `live-voice-ai`, `models/` → Gemini's [`GEMINI_DEFAULT_MODEL`].
///
/// `None`: a model neither vendor has (or not a model name at all).
pub fn parse_model(model: &str) -> Option<(Vendor, String)> {
    let m = model.trim();
    if m.len() > MAX_MODEL_LEN || !m.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if m.is_empty() || m == "live-voice-ai" || m == "models/" {
        return Some((Vendor::Gemini, GEMINI_DEFAULT_MODEL.into()));
    }
    // A name after its family's prefix: `gpt-` or `gemini-` alone names
    // no model.
    let named = |s: &str, family: &str| {
        s.strip_prefix(family)
            .is_some_and(|rest| !rest.is_empty() && valid_name(rest))
    };
    match Vendor::of_model(m) {
        Vendor::OpenAi => {
            let name = m.strip_prefix("openai/").unwrap_or(m);
            let ok = if m.starts_with("openai/") {
                valid_name(name) && (!name.starts_with("gpt-") || named(name, "gpt-"))
            } else {
                named(name, "gpt-")
            };
            ok.then(|| (Vendor::OpenAi, name.to_owned()))
        }
        Vendor::Gemini => {
            let bare = m.strip_prefix("google/").unwrap_or(m);
            let bare = bare.strip_prefix("models/").unwrap_or(bare);
            named(bare, "gemini-").then(|| (Vendor::Gemini, format!("models/{bare}")))
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

impl Vendor {
    /// The vendor a call's `model` field picks (the switch's engine choice
    /// by the same rule; [`parse_model`] says whether that vendor has it).
    pub fn of_model(model: &str) -> Vendor {
        let m = model.trim();
        if m.starts_with("openai/") || m.starts_with("gpt-") {
            Vendor::OpenAi
        } else {
            Vendor::Gemini
        }
    }

    /// The voice a call or virtual number gets when it names none: the
    /// spec's `Aoede` for Gemini; `marin`, OpenAI's recommended voice for
    /// its realtime model.
    pub fn default_voice(self) -> &'static str {
        match self {
            Vendor::Gemini => "Aoede",
            Vendor::OpenAi => "marin",
        }
    }

    /// The vendor's prebuilt voices, where the vendor refuses any other
    /// name: OpenAI Realtime's (a custom voice is an object, not a name).
    /// `None`: the vendor's list is open to us (Gemini's 30 voices grow).
    pub fn closed_voices(self) -> Option<&'static [&'static str]> {
        match self {
            Vendor::Gemini => None,
            Vendor::OpenAi => Some(&[
                "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
                "cedar",
            ]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_pick_their_vendor_and_its_default_voice() {
        for (model, vendor, voice) in [
            ("", Vendor::Gemini, "Aoede"),
            (
                "models/gemini-2.5-flash-native-audio-preview-12-2025",
                Vendor::Gemini,
                "Aoede",
            ),
            ("live-voice-ai", Vendor::Gemini, "Aoede"),
            ("openai/gpt-realtime", Vendor::OpenAi, "marin"),
            ("gpt-realtime-mini", Vendor::OpenAi, "marin"),
            (" openai/gpt-realtime ", Vendor::OpenAi, "marin"),
        ] {
            assert_eq!(Vendor::of_model(model), vendor, "{model}");
            assert_eq!(vendor.default_voice(), voice);
        }
        let open_ai = Vendor::OpenAi.closed_voices().unwrap_or_default();
        assert!(open_ai.contains(&Vendor::OpenAi.default_voice()));
        assert!(open_ai.contains(&Vendor::OpenAi.default_voice()));
        assert!(!open_ai.contains(&Vendor::Gemini.default_voice()));
        assert_eq!(Vendor::Gemini.closed_voices(), None);
    }

    #[test]
    fn models_are_spelt_as_their_vendor_spells_them() {
        for (model, vendor, name) in [
            ("openai/gpt-realtime", Vendor::OpenAi, "gpt-realtime"),
            ("gpt-realtime-mini", Vendor::OpenAi, "gpt-realtime-mini"),
            ("openai/some-new-model", Vendor::OpenAi, "some-new-model"),
            (
                "gemini-live-2.5-flash",
                Vendor::Gemini,
                "models/gemini-live-2.5-flash",
            ),
            (
                "models/gemini-2.0-flash-live-001",
                Vendor::Gemini,
                "models/gemini-2.0-flash-live-001",
            ),
            (
                "google/gemini-2.0-flash-live-001",
                Vendor::Gemini,
                "models/gemini-2.0-flash-live-001",
            ),
            ("", Vendor::Gemini, GEMINI_DEFAULT_MODEL),
            ("models/", Vendor::Gemini, GEMINI_DEFAULT_MODEL),
            ("live-voice-ai", Vendor::Gemini, GEMINI_DEFAULT_MODEL),
        ] {
            assert_eq!(
                parse_model(model),
                Some((vendor, name.to_owned())),
                "{model}"
            );
        }
        for bad in [
            "banana",
            "claude-3",
            "google/claude",
            "models/banana",
            "gemini",
            "gemini-",
            "models/gemini-",
            "gpt-",
            "openai/",
            "openai/gpt-",
            "openai/a b",
            "models/gemini?key=x",
            &"g".repeat(200),
        ] {
            assert_eq!(parse_model(bad), None, "{bad}");
        }
    }
}
