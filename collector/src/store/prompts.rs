//! Prompts and their versions: the rows, their SQL, and the SQLite [`PromptStore`].

use futures::FutureExt as _;
use futures::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracia::{Provider, Role};

use super::{FoundPrompt, PromptEdit, PromptStore, PromptUpdate, Result, Store};

/// One message of a prompt template, as Tracia shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptMessage {
    /// `msg_1`, `msg_2`, … unless the client named it.
    pub id: String,
    /// `system`, `developer`, `user` or `assistant`.
    pub role: Role,
    /// The text, with `{{name}}` placeholders.
    pub content: String,
}

/// The model settings of a version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The provider, when the version names one.
    pub provider: Option<Provider>,
    /// The model.
    pub model: Option<String>,
    /// The sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// The most tokens an answer may have.
    pub max_output_tokens: Option<u32>,
    /// Where the model stops.
    pub stop_sequences: Option<Vec<String>>,
}

/// A prompt's own fields (its content is in its versions).
#[derive(Debug, Clone)]
pub struct PromptRow {
    /// `prm_` + 16 hex.
    pub id: String,
    /// The unique slug it is addressed by.
    pub slug: String,
    /// The display name.
    pub name: String,
    /// A description, if any.
    pub description: Option<String>,
    /// The version runs and reads use unless told otherwise.
    pub current_version: i64,
    /// When it was created, Unix nanoseconds.
    pub created_ns: i64,
    /// When it last changed, Unix nanoseconds.
    pub updated_ns: i64,
}

/// One version of a prompt: its template and model settings.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// 1, 2, …
    pub version: i64,
    /// The template.
    pub content: Vec<PromptMessage>,
    /// The template's `{{variables}}`.
    pub variables: Vec<String>,
    /// The model settings.
    pub settings: Settings,
    /// When it was made, Unix nanoseconds.
    pub created_ns: i64,
}

const PROMPT_COLUMNS: &str = "id, slug, name, description, current_version, created_ns, updated_ns";
const VERSION_COLUMNS: &str = "version, content, variables, provider, model, temperature, top_p, \
    max_output_tokens, stop_sequences, created_ns";

fn prompt_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PromptRow> {
    Ok(PromptRow {
        id: row.get(0)?,
        slug: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        current_version: row.get(4)?,
        created_ns: row.get(5)?,
        updated_ns: row.get(6)?,
    })
}

/// A JSON column, or a conversion error naming it.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    let provider: Option<String> = row.get(3)?;
    let stop: Option<String> = row.get(8)?;
    Ok(VersionRow {
        version: row.get(0)?,
        content: json_column(row, 1)?,
        variables: json_column(row, 2)?,
        settings: Settings {
            provider: provider.as_deref().and_then(Provider::parse),
            model: row.get(4)?,
            temperature: row.get(5)?,
            top_p: row.get(6)?,
            max_output_tokens: row.get(7)?,
            stop_sequences: stop.and_then(|s| serde_json::from_str(&s).ok()),
        },
        created_ns: row.get(9)?,
    })
}

fn prompt_by_slug(conn: &Connection, slug: &str) -> rusqlite::Result<Option<PromptRow>> {
    conn.prepare_cached(&format!(
        "SELECT {PROMPT_COLUMNS} FROM prompts WHERE slug = ?1"
    ))?
    .query_row(params![slug], prompt_from_row)
    .optional()
}

fn version_of(
    conn: &Connection,
    prompt_id: &str,
    version: i64,
) -> rusqlite::Result<Option<VersionRow>> {
    conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM prompt_versions WHERE prompt_id = ?1 AND version = ?2"
    ))?
    .query_row(params![prompt_id, version], version_from_row)
    .optional()
}

fn insert_version(conn: &Connection, prompt_id: &str, v: &VersionRow) -> rusqlite::Result<()> {
    let s = &v.settings;
    conn.prepare_cached(
        "INSERT INTO prompt_versions (prompt_id, version, content, variables, provider, model,
            temperature, top_p, max_output_tokens, stop_sequences, created_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        prompt_id,
        v.version,
        json!(v.content).to_string(),
        json!(v.variables).to_string(),
        s.provider.map(Provider::as_str),
        s.model,
        s.temperature,
        s.top_p,
        s.max_output_tokens,
        s.stop_sequences.as_ref().map(|x| json!(x).to_string()),
        v.created_ns,
    ])?;
    Ok(())
}

/// Writes the prompt's own columns (insert or update).
fn save_prompt(conn: &Connection, p: &PromptRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO prompts (id, slug, name, description, current_version, created_ns, updated_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET slug = excluded.slug, name = excluded.name,
            description = excluded.description, current_version = excluded.current_version,
            updated_ns = excluded.updated_ns",
    )?
    .execute(params![
        p.id,
        p.slug,
        p.name,
        p.description,
        p.current_version,
        p.created_ns,
        p.updated_ns
    ])?;
    Ok(())
}

/// The prompt handlers' reads and writes, each one read or one write transaction as
/// they were when the handlers ran them.
impl PromptStore for Store {
    fn prompts(&self) -> BoxFuture<'_, Result<Vec<(PromptRow, VersionRow)>>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PROMPT_COLUMNS} FROM prompts ORDER BY updated_ns DESC, slug"
            ))?;
            let prompts = stmt
                .query_map([], prompt_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut rows = Vec::with_capacity(prompts.len());
            for prompt in prompts {
                if let Some(version) = version_of(conn, &prompt.id, prompt.current_version)? {
                    rows.push((prompt, version));
                }
            }
            Ok(rows)
        })
        .boxed()
    }

    fn prompt<'a>(
        &'a self,
        slug: &'a str,
        version: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<FoundPrompt>>> {
        let owned = slug.to_owned();
        self.read(move |conn| {
            let Some(prompt) = prompt_by_slug(conn, &owned)? else {
                return Ok(None);
            };
            let version = version_of(conn, &prompt.id, version.unwrap_or(prompt.current_version))?;
            Ok(Some((prompt, version)))
        })
        .boxed()
    }

    fn create_prompt(
        &self,
        prompt: PromptRow,
        version: VersionRow,
    ) -> BoxFuture<'_, Result<Option<(PromptRow, VersionRow)>>> {
        self.write(move |tx| {
            if prompt_by_slug(tx, &prompt.slug)?.is_some() {
                return Ok(None);
            }
            save_prompt(tx, &prompt)?;
            insert_version(tx, &prompt.id, &version)?;
            Ok(Some((prompt, version)))
        })
        .boxed()
    }

    fn update_prompt(
        &self,
        slug: String,
        new_slug: Option<String>,
        edit: PromptEdit,
    ) -> BoxFuture<'_, Result<PromptUpdate>> {
        self.write(move |tx| {
            let Some(mut prompt) = prompt_by_slug(tx, &slug)? else {
                return Ok(PromptUpdate::NotFound);
            };
            let Some(current) = version_of(tx, &prompt.id, prompt.current_version)? else {
                return Ok(PromptUpdate::NotFound);
            };
            if let Some(new_slug) = new_slug.filter(|s| *s != prompt.slug) {
                if prompt_by_slug(tx, &new_slug)?.is_some() {
                    return Ok(PromptUpdate::SlugTaken(new_slug));
                }
                prompt.slug = new_slug;
            }
            let version = match edit(&mut prompt, &current) {
                Err(message) => return Ok(PromptUpdate::Invalid(message)),
                Ok(None) => current,
                Ok(Some(next)) => {
                    insert_version(tx, &prompt.id, &next)?;
                    next
                }
            };
            save_prompt(tx, &prompt)?;
            Ok(PromptUpdate::Updated(Box::new((prompt, version))))
        })
        .boxed()
    }

    fn delete_prompt<'a>(&'a self, slug: &'a str) -> BoxFuture<'a, Result<bool>> {
        let owned = slug.to_owned();
        self.write(move |tx| {
            let Some(prompt) = prompt_by_slug(tx, &owned)? else {
                return Ok(false);
            };
            tx.execute(
                "DELETE FROM prompt_versions WHERE prompt_id = ?1",
                params![prompt.id],
            )?;
            tx.execute("DELETE FROM prompts WHERE id = ?1", params![prompt.id])?;
            Ok(true)
        })
        .boxed()
    }

    fn prompt_versions<'a>(
        &'a self,
        slug: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<VersionRow>>>> {
        let owned = slug.to_owned();
        self.read(move |conn| {
            let Some(prompt) = prompt_by_slug(conn, &owned)? else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM prompt_versions WHERE prompt_id = ?1
                 ORDER BY version DESC"
            ))?;
            let rows = stmt.query_map(params![prompt.id], version_from_row)?;
            Ok(Some(rows.collect::<rusqlite::Result<Vec<_>>>()?))
        })
        .boxed()
    }
}
