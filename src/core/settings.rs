//! Per-session settings (`/set`): how a human session wants its lines. They
//! start off for every new connection and are kept, for a registered
//! account, in the journal (`Record::Settings`) and restored at login.

use crate::proto::Setting;

/// Which settings are on. All off is what nc users have always had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings {
    bits: u8,
}

impl Settings {
    fn bit(s: Setting) -> u8 {
        match s {
            Setting::Timestamps => 1,
            Setting::Echo => 2,
            Setting::Prompt => 4,
        }
    }

    pub fn get(self, s: Setting) -> bool {
        self.bits & Self::bit(s) != 0
    }

    pub fn set(&mut self, s: Setting, on: bool) {
        if on {
            self.bits |= Self::bit(s);
        } else {
            self.bits &= !Self::bit(s);
        }
    }

    /// The journal form: the names of the settings that are on.
    pub fn to_words(self) -> String {
        Setting::ALL
            .into_iter()
            .filter(|&s| self.get(s))
            .map(Setting::name)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads [`Settings::to_words`]; names it does not know are ignored (a
    /// newer version may have written them).
    pub fn from_words(words: &str) -> Settings {
        let mut s = Settings::default();
        for w in words.split(' ') {
            if let Some(x) = Setting::parse(w) {
                s.set(x, true);
            }
        }
        s
    }

    /// `timestamps off, echo off, prompt off`: the answer to a bare `/set`.
    pub fn describe(self) -> String {
        Setting::ALL
            .into_iter()
            .map(|s| format!("{} {}", s.name(), if self.get(s) { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_names_are_ignored() {
        let mut s = Settings::default();
        assert_eq!(s.to_words(), "");
        s.set(Setting::Timestamps, true);
        s.set(Setting::Prompt, true);
        assert_eq!(s.to_words(), "timestamps prompt");
        assert_eq!(Settings::from_words("timestamps prompt"), s);
        assert_eq!(Settings::from_words("prompt colour timestamps"), s);
        s.set(Setting::Timestamps, false);
        assert_eq!(s.describe(), "timestamps off, echo off, prompt on");
    }
}
