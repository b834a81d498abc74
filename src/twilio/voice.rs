//! A code by phone call: CreateCall with inline TwiML that says the text twice, in the
//! request's locale when `<Say>` speaks it, else `twilio.voice_language`. The text is
//! the caller's (the code's template, digits spaced out); this part only speaks it.

use super::{Outgoing, TwilioClient};
use crate::config::{SAY_LANGUAGES, TwilioFrom};
use crate::types::{Channel, PhoneNumber};

impl TwilioClient {
    /// CreateCall's form for a voice code; `None` when no `twilio.voice_from` is set.
    pub fn call(&self, to: &PhoneNumber, text: &str, locale: Option<&str>) -> Option<Outgoing> {
        let TwilioFrom::Number(from) = self.sender(Channel::Voice)? else {
            return None;
        };
        let language = say_language(locale, self.voice_language);
        let mut form = vec![
            ("To", to.as_str().to_owned()),
            ("From", from.as_str().to_owned()),
            ("Twiml", twiml(text, language)),
        ];
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        Some(Outgoing {
            to: to.clone(),
            form,
            call: true,
        })
    }
}

/// The `<Say>` language for a locale: the same one ("es-MX"), else the configured
/// default when it has the same language, else that language in its own country
/// ("es" → "es-ES"), else any region of it, else the default.
fn say_language(locale: Option<&str>, default: &'static str) -> &'static str {
    let Some(locale) = locale.map(|l| l.replace('_', "-")) else {
        return default;
    };
    let exact = SAY_LANGUAGES
        .iter()
        .find(|l| l.eq_ignore_ascii_case(&locale));
    let language = locale
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let speaks = |l: &&&str| l.split('-').next() == Some(language.as_str());
    exact
        .or_else(|| Some(&default).filter(speaks))
        .or_else(|| {
            SAY_LANGUAGES
                .iter()
                .find(|l| l.eq_ignore_ascii_case(&format!("{language}-{language}")))
        })
        .or_else(|| SAY_LANGUAGES.iter().find(speaks))
        .copied()
        .unwrap_or(default)
}

/// Says `text` twice with a pause between, so a callee who picked up late still hears it.
fn twiml(text: &str, language: &str) -> String {
    let say = format!("<Say language=\"{language}\">{}</Say>", escape(text));
    format!("<Response>{say}<Pause length=\"1\"/>{say}</Response>")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locale_picks_the_closest_language_say_speaks() {
        let pick = |locale| say_language(locale, "en-US");
        assert_eq!(pick(Some("es-MX")), "es-MX");
        assert_eq!(pick(Some("es_mx")), "es-MX");
        assert_eq!(pick(Some("es")), "es-ES");
        assert_eq!(
            pick(Some("en")),
            "en-US",
            "the default when it is the language"
        );
        assert_eq!(pick(Some("en-NZ")), "en-US");
        assert_eq!(pick(Some("pt")), "pt-PT");
        assert_eq!(
            pick(Some("sv")),
            "sv-SE",
            "no sv-SV: any region of the language"
        );
        assert_eq!(pick(Some("eu")), "en-US", "Basque: not spoken, the default");
        assert_eq!(pick(None), "en-US");
        assert_eq!(say_language(Some("xx"), "fr-FR"), "fr-FR");
    }

    #[test]
    fn the_text_is_said_twice_and_escaped() {
        assert_eq!(
            twiml("Code 1, 2 <&>", "en-GB"),
            "<Response><Say language=\"en-GB\">Code 1, 2 &lt;&amp;&gt;</Say><Pause length=\"1\"/>\
             <Say language=\"en-GB\">Code 1, 2 &lt;&amp;&gt;</Say></Response>"
        );
    }
}
