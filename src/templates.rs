//! Message templates: named texts in several locales with `{variable}` slots, checked
//! when the configuration loads and rendered per request. Knows nothing of HTTP, OTPs or
//! Twilio; the OTP template is just the one named `otp`.
//!
//! Hand-written rather than a template engine: the syntax is `{name}` and `{{`/`}}` for
//! literal braces, with no logic, so there is nothing to sandbox and little to read.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("has a '{{' without a closing '}}' (write {{{{ for a literal brace)")]
    Unclosed,
    #[error("has a '}}' without an opening '{{' (write }}}} for a literal brace)")]
    Unopened,
    #[error("has an empty or malformed variable {{{0}}}: use letters, digits and '_'")]
    BadName(String),
    #[error("no template named {0:?}")]
    UnknownTemplate(String),
    #[error("missing variable {0:?}")]
    MissingVariable(String),
    #[error("unknown variable {0:?}")]
    UnknownVariable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// One text in one locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::Unopened),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(TemplateError::Unclosed),
                        }
                    }
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(TemplateError::BadName(name));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    pub fn variables(&self) -> BTreeSet<String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Var(name) => Some(name.clone()),
                Part::Text(_) => None,
            })
            .collect()
    }

    /// Fills every slot from `value`; a slot it has no value for is an error.
    pub fn render<'a>(
        &self,
        value: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => out.push_str(
                    value(name).ok_or_else(|| TemplateError::MissingVariable(name.clone()))?,
                ),
            }
        }
        Ok(out)
    }
}

/// One named template in all its locales; every locale has the same variables, and
/// the default locale is always there.
#[derive(Debug, Clone)]
pub struct Localized {
    locales: BTreeMap<String, Template>,
    variables: BTreeSet<String>,
    default_locale: String,
}

impl Localized {
    pub fn variables(&self) -> &BTreeSet<String> {
        &self.variables
    }

    /// The locale to render in: the requested one, else its language (`es-mx` → `es`),
    /// else the default.
    pub fn locale_for(&self, requested: Option<&str>) -> &str {
        pick(&self.locales, requested).map_or(&self.default_locale, |(locale, _)| locale)
    }

    /// This template with each slot matched to one of `S`'s values, for a caller whose
    /// slots are a closed set (the OTP text): rendering the result cannot fail.
    /// Err: a slot `slot` does not know.
    pub fn bind<S: Copy>(
        &self,
        slot: impl Fn(&str) -> Option<S>,
    ) -> Result<Bound<S>, TemplateError> {
        let bind = |t: &Template| -> Result<Vec<Piece<S>>, TemplateError> {
            let piece = |part: &Part| match part {
                Part::Text(text) => Ok(Piece::Text(text.clone())),
                Part::Var(name) => (slot(name).map(Piece::Slot))
                    .ok_or_else(|| TemplateError::UnknownVariable(name.clone())),
            };
            t.parts.iter().map(piece).collect()
        };
        let default = self
            .locales
            .get(&self.default_locale)
            .ok_or_else(|| TemplateError::UnknownTemplate(self.default_locale.clone()))?;
        Ok(Bound {
            default: bind(default)?,
            locales: (self.locales.iter())
                .map(|(locale, t)| Ok((locale.clone(), bind(t)?)))
                .collect::<Result<_, TemplateError>>()?,
        })
    }

    /// Renders in `locale` with the caller's variables, which must be exactly the
    /// template's: a missing one would leave a hole, an unknown one is probably a typo.
    pub fn render(
        &self,
        locale: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<String, TemplateError> {
        if let Some(unknown) = variables.keys().find(|k| !self.variables.contains(*k)) {
            return Err(TemplateError::UnknownVariable(unknown.clone()));
        }
        self.locales
            .get(locale)
            .ok_or_else(|| TemplateError::UnknownTemplate(locale.to_owned()))?
            .render(|name| variables.get(name).map(String::as_str))
    }
}

/// The requested locale, else its language (`es-mx` → `es`); `None`: neither is there.
fn pick<'a, T>(
    locales: &'a BTreeMap<String, T>,
    requested: Option<&str>,
) -> Option<(&'a String, &'a T)> {
    let requested = normalize_locale(requested?);
    let language = requested.split('-').next().unwrap_or_default();
    [requested.as_str(), language]
        .into_iter()
        .find_map(|candidate| locales.get_key_value(candidate))
}

/// A [`Localized`] template bound to a closed set of slots `S` (see [`Localized::bind`]).
#[derive(Debug, Clone)]
pub struct Bound<S> {
    default: Vec<Piece<S>>,
    locales: BTreeMap<String, Vec<Piece<S>>>,
}

#[derive(Debug, Clone)]
enum Piece<S> {
    Text(String),
    Slot(S),
}

impl<S: Copy> Bound<S> {
    /// The text in the requested locale (as [`Localized::locale_for`] picks it), every
    /// slot filled by `value`.
    pub fn render<'a>(&self, requested: Option<&str>, value: impl Fn(S) -> &'a str) -> String {
        let pieces = pick(&self.locales, requested).map_or(&self.default, |(_, p)| p);
        pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Slot(slot) => value(*slot),
            })
            .collect()
    }
}

/// All templates by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    templates: BTreeMap<String, Localized>,
}

/// Locales are compared in lower case with `-`: `es_MX` and `es-mx` are the same.
fn normalize_locale(locale: &str) -> String {
    locale.trim().replace('_', "-").to_ascii_lowercase()
}

impl Catalog {
    /// Checks every text; `Err` carries the offending `name.locale` and the reason.
    pub fn new(
        default_locale: &str,
        raw: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Self, (String, String)> {
        let default_locale = normalize_locale(default_locale);
        let mut templates = BTreeMap::new();
        for (name, texts) in raw {
            let mut locales = BTreeMap::new();
            let mut variables: Option<(String, BTreeSet<String>)> = None;
            for (locale, text) in texts {
                let locale = normalize_locale(locale);
                let key = format!("{name}.{locale}");
                let template = Template::parse(text).map_err(|e| (key.clone(), e.to_string()))?;
                let vars = template.variables();
                match &variables {
                    None => variables = Some((locale.clone(), vars)),
                    Some((first, expected)) if *expected != vars => {
                        return Err((
                            key,
                            format!(
                                "uses variables {vars:?} but {name}.{first} uses {expected:?}; \
                                 every locale must use the same ones"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                locales.insert(locale, template);
            }
            if !locales.contains_key(&default_locale) {
                return Err((
                    name.clone(),
                    format!("has no text for the default locale {default_locale:?}"),
                ));
            }
            let variables = variables.map(|(_, v)| v).unwrap_or_default();
            templates.insert(
                name.clone(),
                Localized {
                    locales,
                    variables,
                    default_locale: default_locale.clone(),
                },
            );
        }
        Ok(Catalog { templates })
    }

    pub fn get(&self, name: &str) -> Option<&Localized> {
        self.templates.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn catalog() -> Catalog {
        let raw: BTreeMap<String, BTreeMap<String, String>> = [(
            "booking".to_owned(),
            [
                ("en", "Table for {party} at {time}."),
                ("es", "Mesa para {party} a las {time}."),
                ("pt_BR", "Mesa para {party} às {time}."),
            ]
            .into_iter()
            .map(|(l, t)| (l.to_owned(), t.to_owned()))
            .collect(),
        )]
        .into_iter()
        .collect();
        Catalog::new("en", &raw).unwrap()
    }

    #[test]
    fn renders_slots_and_literal_braces() {
        let t = Template::parse("{{literal}} {name}: {n}}}").unwrap();
        let out = t
            .render(|k| match k {
                "name" => Some("Ana"),
                "n" => Some("3"),
                _ => None,
            })
            .unwrap();
        assert_eq!(out, "{literal} Ana: 3}");
        assert_eq!(
            t.variables(),
            ["n", "name"].map(String::from).into_iter().collect()
        );
    }

    #[test]
    fn malformed_texts_are_refused() {
        assert_eq!(
            Template::parse("a {b").unwrap_err(),
            TemplateError::Unclosed
        );
        assert_eq!(
            Template::parse("a } b").unwrap_err(),
            TemplateError::Unopened
        );
        assert!(matches!(
            Template::parse("{}").unwrap_err(),
            TemplateError::BadName(_)
        ));
        assert!(matches!(
            Template::parse("{a b}").unwrap_err(),
            TemplateError::BadName(_)
        ));
    }

    #[test]
    fn locales_fall_back_to_the_language_then_the_default() {
        let c = catalog();
        let t = c.get("booking").unwrap();
        assert_eq!(t.locale_for(Some("es")), "es");
        assert_eq!(t.locale_for(Some("es_MX")), "es");
        assert_eq!(t.locale_for(Some("PT-br")), "pt-br");
        assert_eq!(t.locale_for(Some("fr")), "en");
        assert_eq!(t.locale_for(None), "en");
        let v = vars(&[("party", "4"), ("time", "21:00")]);
        assert_eq!(t.render("es", &v).unwrap(), "Mesa para 4 a las 21:00.");
    }

    #[test]
    fn variables_must_match_exactly() {
        let c = catalog();
        let t = c.get("booking").unwrap();
        assert_eq!(
            t.render("en", &vars(&[("party", "4")])).unwrap_err(),
            TemplateError::MissingVariable("time".into())
        );
        assert_eq!(
            t.render("en", &vars(&[("party", "4"), ("time", "9"), ("tiem", "9")]))
                .unwrap_err(),
            TemplateError::UnknownVariable("tiem".into())
        );
    }

    #[test]
    fn a_bound_template_renders_every_locale_and_refuses_a_slot_it_cannot_fill() {
        let booking = catalog().get("booking").unwrap().clone();
        let slots = |name: &str| ["party", "time"].into_iter().position(|s| s == name);
        let bound = booking.bind(slots).unwrap();
        let value = |slot| ["4", "21:00"][slot];
        assert_eq!(
            bound.render(Some("es_MX"), value),
            "Mesa para 4 a las 21:00."
        );
        assert_eq!(bound.render(Some("fr"), value), "Table for 4 at 21:00.");
        let party_only = |name: &str| (name == "party").then_some(0);
        assert_eq!(
            booking.bind(party_only).unwrap_err(),
            TemplateError::UnknownVariable("time".into())
        );
    }

    #[test]
    fn a_catalog_needs_the_default_locale_and_one_variable_set() {
        let raw = |pairs: &[(&str, &str)]| -> BTreeMap<String, BTreeMap<String, String>> {
            [(
                "t".to_owned(),
                pairs
                    .iter()
                    .map(|(l, x)| ((*l).to_owned(), (*x).to_owned()))
                    .collect(),
            )]
            .into_iter()
            .collect()
        };
        let (key, why) = Catalog::new("en", &raw(&[("es", "hola")])).unwrap_err();
        assert_eq!(key, "t");
        assert!(why.contains("default locale"), "{why}");
        let (key, why) =
            Catalog::new("en", &raw(&[("en", "hi {name}"), ("es", "hola {nombre}")])).unwrap_err();
        assert_eq!(key, "t.es");
        assert!(why.contains("same"), "{why}");
    }
}
