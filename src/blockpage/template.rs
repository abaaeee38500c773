//! Block page templates: `{{placeholder}}` pages parsed once (an unknown
//! placeholder is an error at `FILE:LINE`), rendered with every value
//! HTML-escaped; the page's language chosen from `Accept-Language` (Kazakh,
//! Russian, English; English when none matches); the shipped pages and the
//! generic 404 pages compiled in.

use std::path::{Path, PathBuf};

/// The shipped pages (`config/blockpage*.html`), used without `template`.
const SHIPPED: [(Lang, &str, &str); 3] = [
    (Lang::En, "config/blockpage.html", include_str!("../../config/blockpage.html")),
    (Lang::Ru, "config/blockpage.ru.html", include_str!("../../config/blockpage.ru.html")),
    (Lang::Kk, "config/blockpage.kk.html", include_str!("../../config/blockpage.kk.html")),
];

/// A language of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
    Kk,
}

impl Lang {
    /// Every language, in [`Lang::index`] order.
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Ru, Lang::Kk];

    /// The language tag (`Content-Language`, a variant file's `NAME.TAG.html`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
            Lang::Kk => "kk",
        }
    }

    fn index(self) -> usize {
        match self {
            Lang::En => 0,
            Lang::Ru => 1,
            Lang::Kk => 2,
        }
    }

    /// The language of an `Accept-Language` value (RFC 9110 §12.5.4): the
    /// one of ours with the highest `q` (a range matches on its primary
    /// subtag: `ru-RU` is `ru`; `*` is English), earlier ranges first on a
    /// tie; English when none matches or the header is absent. Cost: one
    /// pass over the value, no allocation; at most 32 ranges are read.
    pub fn from_accept_language(value: Option<&str>) -> Lang {
        let Some(value) = value else { return Lang::En };
        let mut best: Option<(u16, Lang)> = None;
        for range in value.split(',').take(32) {
            let mut parts = range.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts.find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q="))).map_or(Some(1000), parse_q);
            let Some(q) = q.filter(|&q| q > 0) else { continue };
            let primary = tag.split('-').next().unwrap_or("");
            let lang = if primary == "*" {
                Lang::En
            } else if let Some(l) = Lang::ALL.into_iter().find(|l| primary.eq_ignore_ascii_case(l.tag())) {
                l
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }
}

/// A `q` value in thousandths (`0.8` → 800); `None` when malformed.
fn parse_q(s: &str) -> Option<u16> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut milli = 0u16;
    for (i, b) in frac.bytes().enumerate() {
        milli += u16::from(b - b'0') * [100, 10, 1][i];
    }
    Some(whole.saturating_add(milli).min(1000))
}

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    List,
    Decision,
    Authority,
    Date,
    Contact,
    Reason,
}

const FIELDS: [(&str, Field); 7] = [
    ("name", Field::Name),
    ("list", Field::List),
    ("decision", Field::Decision),
    ("authority", Field::Authority),
    ("date", Field::Date),
    ("contact", Field::Contact),
    ("reason", Field::Reason),
];

/// The values of one page; an empty one is shown as `—`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Values<'a> {
    /// The blocked name (from the request's `Host`).
    pub name: &'a str,
    pub list: &'a str,
    pub decision: &'a str,
    pub authority: &'a str,
    pub date: &'a str,
    pub contact: &'a str,
    /// The Extended DNS Error text the DNS answer carries.
    pub reason: &'a str,
}

impl Values<'_> {
    fn get(&self, f: Field) -> &str {
        match f {
            Field::Name => self.name,
            Field::List => self.list,
            Field::Decision => self.decision,
            Field::Authority => self.authority,
            Field::Date => self.date,
            Field::Contact => self.contact,
            Field::Reason => self.reason,
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Text(Box<str>),
    Field(Field),
}

/// One parsed page.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Bytes of text outside placeholders (a rendering's starting capacity).
    text_len: usize,
}

/// Why a template was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The configured file cannot be read; `at` is the `template` key's `FILE:LINE`.
    #[error("{at}: template {}: cannot read", file.display())]
    Read {
        at: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Syntax { file: String, line: usize, reason: String },
}

impl Template {
    /// Parses `text`; `file` names it in errors. Cost: one pass.
    pub fn parse(file: &str, text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut text_len = 0usize;
        let mut rest = text;
        let mut line = 1usize;
        let err = |line: usize, reason: String| TemplateError::Syntax { file: file.to_owned(), line, reason };
        while let Some(open) = rest.find("{{") {
            let (before, after) = rest.split_at(open);
            if !before.is_empty() {
                pieces.push(Piece::Text(before.into()));
                text_len += before.len();
            }
            line += before.matches('\n').count();
            let Some(close) = after.find("}}") else {
                return Err(err(line, "`{{` is not closed by `}}`".into()));
            };
            let inner = &after[2..close];
            if inner.contains('\n') || inner.contains("{{") {
                return Err(err(line, "`{{` is not closed by `}}` on its line".into()));
            }
            let key = inner.trim();
            let Some((_, f)) = FIELDS.iter().find(|(k, _)| *k == key) else {
                let known: Vec<String> = FIELDS.iter().map(|(k, _)| format!("{{{{{k}}}}}")).collect();
                return Err(err(line, format!("unknown placeholder `{{{{{inner}}}}}`; known: {}", known.join(" "))));
            };
            pieces.push(Piece::Field(*f));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            text_len += rest.len();
            pieces.push(Piece::Text(rest.into()));
        }
        Ok(Self { pieces, text_len })
    }

    /// The page with `values` HTML-escaped in place of the placeholders.
    /// Cost: one `String` sized to the page.
    pub fn render(&self, values: &Values<'_>) -> String {
        let mut out = String::with_capacity(self.text_len + 512);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => match values.get(*f) {
                    "" => out.push('—'),
                    v => escape_into(&mut out, v),
                },
            }
        }
        out
    }
}

/// Appends `s` with `& < > " '` as character references (safe in element
/// text and in quoted attribute values).
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The page of each language.
#[derive(Debug, Clone)]
pub struct Templates {
    pages: [Template; 3],
    /// Where each page came from (`qalqan check` prints it).
    pub files: [String; 3],
}

impl Templates {
    /// The shipped pages.
    pub fn shipped() -> Result<Self, TemplateError> {
        let mut pages = Vec::new();
        for (_, file, text) in SHIPPED {
            pages.push(Template::parse(file, text)?);
        }
        Self::from_pages(pages, SHIPPED.map(|(_, f, _)| format!("{f} (compiled in)")))
    }

    /// The operator's page `file` and its variants `NAME.kk.html`,
    /// `NAME.ru.html` (and `NAME.en.html`) beside it, when present; a
    /// language without its own file gets `file`. `key_at` is the config's
    /// `FILE:LINE` of the `template` key (for a missing file). Blocking.
    pub fn load(file: &Path, key_at: &str) -> Result<Self, TemplateError> {
        let read = |p: &Path| std::fs::read_to_string(p);
        let main_text = read(file).map_err(|source| TemplateError::Read { at: key_at.to_owned(), file: file.to_owned(), source })?;
        let main = Template::parse(&file.display().to_string(), &main_text)?;
        let mut pages = Vec::new();
        let mut files = Vec::new();
        for lang in Lang::ALL {
            let variant = variant_path(file, lang);
            match variant.as_deref().map(read) {
                Some(Ok(text)) => {
                    let shown = variant.as_deref().map(|p| p.display().to_string()).unwrap_or_default();
                    pages.push(Template::parse(&shown, &text)?);
                    files.push(shown);
                }
                Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                    let file = variant.unwrap_or_default();
                    return Err(TemplateError::Read { at: key_at.to_owned(), file, source: e });
                }
                _ => {
                    pages.push(main.clone());
                    files.push(file.display().to_string());
                }
            }
        }
        Self::from_pages(pages, [files[0].clone(), files[1].clone(), files[2].clone()])
    }

    fn from_pages(pages: Vec<Template>, files: [String; 3]) -> Result<Self, TemplateError> {
        let pages: [Template; 3] = pages.try_into().map_err(|_| TemplateError::Syntax {
            file: files[0].clone(),
            line: 0,
            reason: "internal: one page per language expected".into(),
        })?;
        Ok(Self { pages, files })
    }

    /// The page for `lang`.
    pub fn page(&self, lang: Lang) -> &Template {
        &self.pages[lang.index()]
    }
}

/// `dir/NAME.TAG.html` for `dir/NAME.html` (`None` when the file has no stem).
fn variant_path(file: &Path, lang: Lang) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_str()?;
    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("html");
    Some(file.with_file_name(format!("{stem}.{}.{ext}", lang.tag())))
}

/// The short page of a name that is not blocked (404), in `lang`: generic,
/// it names nothing from the request.
pub fn not_found(lang: Lang) -> &'static str {
    match lang {
        Lang::En => concat!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found</title></head>\n",
            "<body><h1>Not found</h1><p>This address serves no site. The name you asked for is not blocked: ",
            "if you got here by following a link, reload the page in a few minutes.</p></body></html>\n"
        ),
        Lang::Ru => concat!(
            "<!doctype html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\"><title>Не найдено</title></head>\n",
            "<body><h1>Не найдено</h1><p>По этому адресу нет сайта. Запрошенное имя не заблокировано: ",
            "если вы попали сюда по ссылке, обновите страницу через несколько минут.</p></body></html>\n"
        ),
        Lang::Kk => concat!(
            "<!doctype html>\n<html lang=\"kk\"><head><meta charset=\"utf-8\"><title>Табылмады</title></head>\n",
            "<body><h1>Табылмады</h1><p>Бұл мекенжайда сайт жоқ. Сұралған атау бұғатталмаған: ",
            "сілтеме арқылы келсеңіз, бетті бірнеше минуттан кейін жаңартыңыз.</p></body></html>\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_table() {
        let cases: &[(&str, Option<&str>, Lang)] = &[
            ("absent", None, Lang::En),
            ("empty", Some(""), Lang::En),
            ("russian", Some("ru"), Lang::Ru),
            ("region subtag", Some("kk-KZ,kk;q=0.9"), Lang::Kk),
            ("case", Some("RU-ru"), Lang::Ru),
            ("q order", Some("en;q=0.5, ru;q=0.8"), Lang::Ru),
            ("first on tie", Some("kk, ru"), Lang::Kk),
            ("unknown skipped", Some("de-DE, fr;q=0.9, ru;q=0.1"), Lang::Ru),
            ("none of ours", Some("de, fr"), Lang::En),
            ("q=0 is refusal", Some("ru;q=0, kk;q=0.2"), Lang::Kk),
            ("star", Some("de, *;q=0.5"), Lang::En),
            ("malformed q skipped", Some("ru;q=2, kk;q=abc, en;q=0.1"), Lang::En),
            ("browser default", Some("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"), Lang::Ru),
        ];
        for (name, header, want) in cases {
            assert_eq!(Lang::from_accept_language(*header), *want, "case `{name}`");
        }
    }

    #[test]
    fn placeholders_render_escaped_and_unknown_ones_are_errors_at_their_line() {
        let t = Template::parse("t.html", "<p>{{name}} / {{ list }}</p>\n<i>{{decision}}</i>{{date}}").unwrap();
        let v = Values { name: "a.example", list: "<script>\"x\"&'y'</script>", decision: "Д-1", ..Values::default() };
        assert_eq!(t.render(&v), "<p>a.example / &lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;</p>\n<i>Д-1</i>—");

        let cases: &[(&str, &str, &str)] = &[
            ("unknown", "line one\n<p>{{nmae}}</p>", "t.html:2: unknown placeholder `{{nmae}}`"),
            ("unclosed", "a\nb\n{{name", "t.html:3: `{{` is not closed"),
            ("split over lines", "{{na\nme}}", "t.html:1: `{{` is not closed by `}}` on its line"),
        ];
        for (name, text, want) in cases {
            let e = Template::parse("t.html", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "case `{name}`: {e}");
        }
    }

    #[test]
    fn shipped_pages_parse_and_name_every_value() {
        let t = Templates::shipped().unwrap();
        let v = Values {
            name: "N1",
            list: "L2",
            decision: "D3",
            authority: "A4",
            date: "T5",
            contact: "C6",
            reason: "R7",
        };
        for lang in Lang::ALL {
            let page = t.page(lang).render(&v);
            for want in ["N1", "L2", "D3", "A4", "T5", "C6", "R7"] {
                assert!(page.contains(want), "{lang:?} page lacks {want}");
            }
            assert!(page.contains(&format!("lang=\"{}\"", lang.tag())), "{lang:?}");
            assert!(not_found(lang).contains(&format!("lang=\"{}\"", lang.tag())));
        }
    }

    #[test]
    fn variants_beside_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("page.html");
        std::fs::write(&main, "EN {{name}}").unwrap();
        std::fs::write(dir.path().join("page.ru.html"), "RU {{name}}").unwrap();
        let t = Templates::load(&main, "q.toml:9").unwrap();
        let v = Values { name: "x", ..Values::default() };
        assert_eq!(t.page(Lang::Ru).render(&v), "RU x");
        assert_eq!(t.page(Lang::Kk).render(&v), "EN x", "no kk file: the main page");
        std::fs::write(dir.path().join("page.kk.html"), "KK {{nope}}").unwrap();
        let e = Templates::load(&main, "q.toml:9").unwrap_err().to_string();
        assert!(e.contains("page.kk.html:1: unknown placeholder"), "{e}");
        let e = Templates::load(&dir.path().join("missing.html"), "q.toml:9").unwrap_err().to_string();
        assert!(e.starts_with("q.toml:9: template ") && e.contains("missing.html"), "{e}");
    }
}
