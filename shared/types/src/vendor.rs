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

impl Vendor {
    /// The vendor a call's `model` field picks (the switch's engine choice
    /// by the same rule; a model neither vendor has is refused there).
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
        assert!(!open_ai.contains(&Vendor::Gemini.default_voice()));
        assert_eq!(Vendor::Gemini.closed_voices(), None);
    }
}
