//! Google Gemini's `generateContent` / `streamGenerateContent?alt=sse` as an upstream format:
//! the request body encoded from the neutral model (with the [`Drop`]s it cannot carry), the
//! URL path per model, replies and SSE streams decoded back into neutral types, and error
//! bodies read for their message and status.
//!
//! Gemini differs from the chat formats in ways that shape this file: roles alternate strictly
//! between `user` and `model` (tool results are `user` turns), function calls have no ids (so
//! the relay makes them up and finds names again by id), tool schemas are an OpenAPI subset
//! (so JSON Schema is cleaned), and every stream event is a whole response chunk rather than a
//! delta protocol.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use crate::formats::json_array::JsonArrayParser;
use crate::formats::neutral::Usage;
use crate::formats::neutral::{
    ChatRequest, ChatResponse, Drop, Drops, FinishReason, ImageSource, Message, Part, Reasoning,
    ResponseFormat, Role, StreamEvent, ToolCall, ToolChoice,
};
use crate::formats::sse::{SseError, SseEvent, SseParser};

/// Gemini accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

/// Google's documented value for a function call whose thought signature was lost (history
/// from another model or a client that cannot keep it); Gemini 3 rejects such calls without it.
const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Upper bounds on schema cleaning, so a hostile or self-referencing schema cannot blow up
/// the body (each `$ref` is inlined) or the stack (a Worker has about 1 MB of it).
const SCHEMA_MAX_NODES: usize = 10_000;
const SCHEMA_MAX_DEPTH: usize = 64;
const SCHEMA_MAX_REF_NESTING: usize = 16;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// Neutral request → Gemini request body (`contents`, `systemInstruction`, `tools`,
/// `toolConfig`, `generationConfig`; `safetySettings` is left to Gemini's defaults).
pub fn encode_request(req: &ChatRequest) -> (Value, Vec<Drop>) {
    let mut drops = Drops::default();
    let mut body = Map::new();

    body.insert(
        "contents".into(),
        Value::Array(encode_contents(req, &mut drops)),
    );

    let system: Vec<Value> = req
        .system_apart(&mut drops)
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| json!({ "text": s }))
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }

    if req.tools.is_empty() {
        // Without declarations a forced call cannot happen; auto and none already hold.
        if matches!(
            req.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Named(_))
        ) {
            drops.dropped("tool_choice");
        }
    } else {
        body.insert("tools".into(), encode_tools(req, &mut drops));
        if let Some(choice) = &req.tool_choice {
            body.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": encode_tool_choice(choice) }),
            );
        }
    }

    let config = encode_generation_config(req, &mut drops);
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }

    if req.user.is_some() {
        drops.dropped("user");
    }
    // Parallel calls are Gemini's default, so only switching them off is lost.
    if req.parallel_tool_calls == Some(false) {
        drops.dropped("parallel_tool_calls");
    }
    for key in req.extra.keys() {
        drops.dropped(key);
    }
    (Value::Object(body), drops.into_vec())
}

/// URL path of a model's method, relative to the API base (`…/v1beta`). Names that already
/// carry a collection (`models/x`, `tunedModels/x`) are used as they are.
pub fn request_path(model: &str, stream: bool) -> String {
    let model = model.trim_start_matches('/');
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let name = encode_path(model);
    if model.contains('/') {
        format!("/{name}:{method}")
    } else {
        format!("/models/{name}:{method}")
    }
}

/// Percent-encodes what could change the URL's meaning (`?`, `#`, `:`, spaces, …) so a
/// model name can only ever name a model.
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn encode_contents(req: &ChatRequest, drops: &mut Drops) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        let (role, parts) = match message.role {
            Role::User => ("user", content_parts(&message.content, drops)),
            Role::Assistant => ("model", assistant_parts(message, &req.model, drops)),
            Role::Tool => {
                let earlier = req.messages.iter().take(i).rev();
                ("user", tool_result_parts(message, earlier, drops))
            }
            // Sent apart, in `systemInstruction` (`system_apart`).
            Role::System => continue,
        };
        // Gemini rejects a turn without parts, and wants roles to alternate.
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    turns
        .into_iter()
        .map(|(role, parts)| json!({ "role": role, "parts": parts }))
        .collect()
}

fn content_parts(content: &[Part], drops: &mut Drops) -> Vec<Value> {
    content
        .iter()
        .filter_map(|part| match part {
            // Gemini refuses empty text parts.
            Part::Text(text) if text.is_empty() => None,
            Part::Text(text) => Some(json!({ "text": text })),
            Part::Image(source) => image_part(source, drops),
        })
        .collect()
}

fn image_part(source: &ImageSource, drops: &mut Drops) -> Option<Value> {
    match source {
        ImageSource::Base64 { media_type, data } => {
            Some(json!({ "inlineData": { "mimeType": media_type, "data": data } }))
        }
        ImageSource::Url(url) => {
            if let Some(rest) = url.strip_prefix("data:") {
                let Some((meta, data)) = rest.split_once(',') else {
                    drops.dropped("messages.image_url");
                    return None;
                };
                let Some(mime) = meta.strip_suffix(";base64") else {
                    // Only base64 payloads fit `inlineData`; percent-encoded ones are rare.
                    drops.dropped("messages.image_url");
                    return None;
                };
                let mime = if mime.is_empty() { "image/jpeg" } else { mime };
                return Some(json!({ "inlineData": { "mimeType": mime, "data": data } }));
            }
            // Gemini fetches only some URIs (its File API, YouTube, public URLs on newer
            // models), so a URL may be refused where the client expected it to work.
            drops.approximated("messages.image_url");
            Some(json!({ "fileData": { "mimeType": guess_image_mime(url), "fileUri": url } }))
        }
    }
}

fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let ext = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

fn assistant_parts(message: &Message, model: &str, drops: &mut Drops) -> Vec<Value> {
    // Earlier reasoning text is not sent back: Gemini keeps its reasoning state in the
    // thought signature, and replayed thoughts are not input it uses.
    let mut parts = content_parts(&message.content, drops);
    let first_call = parts.len();
    for call in &message.tool_calls {
        let args = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(Value::Object(args)) => Value::Object(args),
            _ if call.arguments.trim().is_empty() => json!({}),
            _ => {
                drops.approximated("messages.tool_calls.arguments");
                json!({})
            }
        };
        parts.push(json!({ "functionCall": { "name": call.name, "args": args } }));
    }
    let has_calls = parts.len() > first_call;
    // Gemini puts the signature on the first function call, or on the last part otherwise.
    let signature = match &message.reasoning_signature {
        Some(signature) => Some(signature.as_str()),
        None if has_calls && needs_signature(model) => Some(SKIP_SIGNATURE),
        None => None,
    };
    let carrier = if has_calls {
        parts.get_mut(first_call)
    } else {
        parts.last_mut()
    };
    if let (Some(signature), Some(Value::Object(part))) = (signature, carrier) {
        part.insert("thoughtSignature".into(), Value::String(signature.into()));
    }
    parts
}

/// Gemini 3 models validate thought signatures on function calls; earlier ones do not, and are
/// not sent the placeholder.
fn needs_signature(model: &str) -> bool {
    model.contains("gemini-3")
}

fn tool_result_parts<'a>(
    message: &Message,
    mut earlier: impl Iterator<Item = &'a Message>,
    drops: &mut Drops,
) -> Vec<Value> {
    let id = message.tool_call_id.as_deref().unwrap_or_default();
    // The nearest earlier call wins: generated ids (`call_0`) repeat from turn to turn.
    let name = earlier.find_map(|m| {
        m.tool_calls
            .iter()
            .find(|call| call.id == id)
            .map(|call| call.name.clone())
    });
    let name = name.unwrap_or_else(|| {
        drops.approximated("messages.tool_call_id");
        id.to_string()
    });
    let text = message.joined_text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(object)) => Value::Object(object),
        // Gemini's documented key for failures is `error`.
        _ if message.is_error => json!({ "error": text }),
        _ => json!({ "content": text }),
    };
    let mut parts = vec![json!({ "functionResponse": { "name": name, "response": response } })];
    for part in &message.content {
        if let Part::Image(source) = part {
            parts.extend(image_part(source, drops));
        }
    }
    parts
}

fn encode_tools(req: &ChatRequest, drops: &mut Drops) -> Value {
    let declarations: Vec<Value> = req
        .tools
        .iter()
        .map(|tool| {
            let mut declaration = Map::new();
            declaration.insert("name".into(), Value::String(tool.name.clone()));
            if let Some(description) = &tool.description {
                declaration.insert("description".into(), Value::String(description.clone()));
            }
            let (parameters, lossy) = clean_schema(&tool.parameters);
            if lossy {
                drops.approximated("tools.parameters");
            }
            // Gemini refuses an OBJECT schema without properties; a function without
            // parameters is declared without `parameters` instead.
            if let Some(parameters) = parameters.filter(|p| !is_empty_object_schema(p)) {
                declaration.insert("parameters".into(), parameters);
            }
            Value::Object(declaration)
        })
        .collect();
    json!([{ "functionDeclarations": declarations }])
}

fn encode_tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({ "mode": "AUTO" }),
        ToolChoice::None => json!({ "mode": "NONE" }),
        ToolChoice::Required => json!({ "mode": "ANY" }),
        ToolChoice::Named(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
    }
}

fn encode_generation_config(req: &ChatRequest, drops: &mut Drops) -> Map<String, Value> {
    let mut config = Map::new();
    let mut put = |key: &str, value: Value| {
        config.insert(key.into(), value);
    };
    if let Some(t) = req.temperature {
        put("temperature", json!(t));
    }
    if let Some(p) = req.top_p {
        put("topP", json!(p));
    }
    if let Some(k) = req.top_k {
        put("topK", json!(k));
    }
    if let Some(max) = req.max_tokens {
        put("maxOutputTokens", json!(max));
    }
    if !req.stop.is_empty() {
        if req.stop.len() > MAX_STOP_SEQUENCES {
            drops.approximated("stop");
        }
        let stop: Vec<&String> = req.stop.iter().take(MAX_STOP_SEQUENCES).collect();
        put("stopSequences", json!(stop));
    }
    if let Some(seed) = req.seed {
        // Gemini's seed is an int32; a wider one is folded, which keeps it deterministic.
        let folded = seed as i32;
        if i64::from(folded) != seed {
            drops.approximated("seed");
        }
        put("seed", json!(folded));
    }
    if let Some(n) = req.n {
        put("candidateCount", json!(n));
    }
    if let Some(p) = req.presence_penalty {
        put("presencePenalty", json!(p));
    }
    if let Some(f) = req.frequency_penalty {
        put("frequencyPenalty", json!(f));
    }
    if let Some(logprobs) = req.logprobs {
        put("responseLogprobs", json!(logprobs));
    }
    if let Some(top) = req.top_logprobs {
        put("logprobs", json!(top));
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => put("responseMimeType", json!("application/json")),
        // Gemini has no schema name and always follows the schema, so `name` and `strict`
        // carry nothing it could use.
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            put("responseMimeType", json!("application/json"));
            let (schema, lossy) = clean_schema(schema);
            match schema.filter(|s| !is_empty_object_schema(s)) {
                Some(schema) => {
                    if lossy {
                        drops.approximated("response_format");
                    }
                    put("responseSchema", schema);
                }
                None => drops.approximated("response_format"),
            }
        }
    }
    match &req.reasoning {
        None => {}
        Some(Reasoning::Budget(budget)) => put(
            "thinkingConfig",
            json!({ "thinkingBudget": budget, "includeThoughts": true }),
        ),
        Some(Reasoning::Effort(effort)) => {
            let budget = match effort.to_ascii_lowercase().as_str() {
                "none" => Some(0),
                "minimal" | "low" => Some(1024),
                "medium" => Some(8192),
                "high" | "xhigh" => Some(24576),
                _ => None,
            };
            match budget {
                Some(0) => put("thinkingConfig", json!({ "thinkingBudget": 0 })),
                Some(budget) => put(
                    "thinkingConfig",
                    json!({ "thinkingBudget": budget, "includeThoughts": true }),
                ),
                None => {}
            }
            if budget.is_some() {
                drops.approximated("reasoning_effort");
            } else {
                drops.dropped("reasoning_effort");
            }
        }
        Some(Reasoning::Disabled) => put("thinkingConfig", json!({ "thinkingBudget": 0 })),
    }
    config
}

fn is_empty_object_schema(schema: &Value) -> bool {
    let Value::Object(object) = schema else {
        return false;
    };
    let is_object =
        matches!(object.get("type"), Some(Value::String(t)) if t.eq_ignore_ascii_case("object"));
    let no_properties = match object.get("properties") {
        None => true,
        Some(Value::Object(p)) => p.is_empty(),
        Some(_) => false,
    };
    is_object && no_properties && !object.contains_key("anyOf")
}

// ---------------------------------------------------------------------------------------------
// JSON Schema → Gemini's OpenAPI subset
// ---------------------------------------------------------------------------------------------

/// Cleans a JSON Schema into the subset Gemini accepts. Returns the schema (`None` for a
/// missing one) and whether anything with meaning was lost. Local `$ref`s are inlined;
/// `$defs`/`definitions` then go without loss.
fn clean_schema(schema: &Value) -> (Option<Value>, bool) {
    if schema.is_null() {
        return (None, false);
    }
    let mut cleaner = SchemaCleaner {
        root: schema,
        lossy: false,
        nodes_left: SCHEMA_MAX_NODES,
        // Inlining copies `$ref` targets: without a byte budget, a small schema that refers to a
        // large definition many times would make an upstream body thousands of times its size.
        bytes_left: schema.to_string().len().saturating_mul(2) + 16 * 1024,
        refs: Vec::new(),
    };
    let cleaned = cleaner.clean(schema, 0);
    (Some(cleaned), cleaner.lossy)
}

struct SchemaCleaner<'a> {
    root: &'a Value,
    lossy: bool,
    nodes_left: usize,
    /// Bytes of `$ref` targets that may still be copied in.
    bytes_left: usize,
    /// The `$ref`s being inlined right now: meeting one again means recursion.
    refs: Vec<String>,
}

impl SchemaCleaner<'_> {
    fn clean(&mut self, schema: &Value, depth: usize) -> Value {
        if self.nodes_left == 0 || depth > SCHEMA_MAX_DEPTH {
            self.lossy = true;
            return json!({});
        }
        self.nodes_left -= 1;
        let Value::Object(object) = schema else {
            // `true` (anything) has no Gemini spelling but `{}` says the same.
            if schema != &Value::Bool(true) {
                self.lossy = true;
            }
            return json!({});
        };
        if let Some(reference) = object.get("$ref") {
            return self.inline_ref(reference, object, depth);
        }

        let mut out = Map::new();
        for (key, value) in object {
            match key.as_str() {
                "type" => self.clean_type(value, &mut out),
                "title" | "description" | "example" | "default" => {
                    out.insert(key.clone(), value.clone());
                }
                "pattern" | "nullable" | "minimum" | "maximum" | "minItems" | "maxItems"
                | "minLength" | "maxLength" | "minProperties" | "maxProperties" => {
                    let fits = match key.as_str() {
                        "pattern" => value.is_string(),
                        "nullable" => value.is_boolean(),
                        _ => value.is_number(),
                    };
                    if fits {
                        out.insert(key.clone(), value.clone());
                    } else {
                        self.lossy = true;
                    }
                }
                "required" | "propertyOrdering" => match value {
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => self.lossy = true,
                },
                "enum" => match value {
                    // Gemini's enums are lists of strings.
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => self.lossy = true,
                },
                "const" => match value {
                    Value::String(_) if !object.contains_key("enum") => {
                        out.insert("enum".into(), json!([value]));
                    }
                    _ => self.lossy = true,
                },
                "properties" => match value {
                    Value::Object(properties) => {
                        let cleaned = properties
                            .iter()
                            .map(|(name, s)| (name.clone(), self.clean(s, depth + 1)))
                            .collect();
                        out.insert(key.clone(), Value::Object(cleaned));
                    }
                    _ => self.lossy = true,
                },
                "items" => match value {
                    Value::Array(tuple) => {
                        // Tuples have no Gemini form; the first position's schema stands in.
                        self.lossy = true;
                        if let Some(first) = tuple.first() {
                            let cleaned = self.clean(first, depth + 1);
                            out.insert(key.clone(), cleaned);
                        }
                    }
                    _ => {
                        let cleaned = self.clean(value, depth + 1);
                        out.insert(key.clone(), cleaned);
                    }
                },
                "anyOf" | "oneOf" => {
                    if key == "oneOf" {
                        // Exactly-one becomes at-least-one.
                        self.lossy = true;
                        if object.contains_key("anyOf") {
                            continue;
                        }
                    }
                    match value {
                        Value::Array(options) => {
                            let cleaned: Vec<Value> =
                                options.iter().map(|s| self.clean(s, depth + 1)).collect();
                            out.insert("anyOf".into(), Value::Array(cleaned));
                        }
                        _ => self.lossy = true,
                    }
                }
                "allOf" => match value {
                    // A single `allOf` (pydantic's way to describe a `$ref`) merges exactly.
                    Value::Array(all) if all.len() == 1 => {
                        if let Some(Value::Object(merged)) =
                            all.first().map(|s| self.clean(s, depth + 1))
                        {
                            for (k, v) in merged {
                                out.entry(k).or_insert(v);
                            }
                        }
                    }
                    _ => self.lossy = true,
                },
                "format" => {}
                "$defs" | "definitions" => {}
                _ => self.lossy = true,
            }
        }
        if let Some(format) = object.get("format") {
            self.clean_format(format, &mut out);
        }
        Value::Object(out)
    }

    fn clean_type(&mut self, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::String(t) => {
                out.insert("type".into(), Value::String(t.clone()));
            }
            // JSON Schema's `["string", "null"]` is OpenAPI's nullable string.
            Value::Array(types) => {
                let mut named: Vec<&str> = Vec::new();
                let mut nullable = false;
                for t in types {
                    match t.as_str() {
                        Some("null") => nullable = true,
                        Some(t) => named.push(t),
                        None => self.lossy = true,
                    }
                }
                match named.as_slice() {
                    [] => self.lossy = true,
                    [one] => {
                        out.insert("type".into(), json!(one));
                    }
                    many => {
                        let options: Vec<Value> =
                            many.iter().map(|t| json!({ "type": t })).collect();
                        out.insert("anyOf".into(), Value::Array(options));
                    }
                }
                if nullable {
                    out.insert("nullable".into(), Value::Bool(true));
                }
            }
            _ => self.lossy = true,
        }
    }

    /// Gemini refuses formats it does not know for the type (e.g. `uri` on a string).
    fn clean_format(&mut self, format: &Value, out: &mut Map<String, Value>) {
        let ty = out
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let allowed: &[&str] = match ty.as_deref() {
            Some("string") => &["enum", "date-time"],
            Some("integer") => &["int32", "int64"],
            Some("number") => &["float", "double"],
            _ => &[],
        };
        match format.as_str() {
            Some(f) if allowed.contains(&f) => {
                out.insert("format".into(), json!(f));
            }
            _ => self.lossy = true,
        }
    }

    fn inline_ref(
        &mut self,
        reference: &Value,
        object: &Map<String, Value>,
        depth: usize,
    ) -> Value {
        let target = reference
            .as_str()
            .filter(|r| !self.refs.iter().any(|seen| seen == r))
            .filter(|_| self.refs.len() < SCHEMA_MAX_REF_NESTING)
            .and_then(|r| r.strip_prefix('#').map(|pointer| (r, pointer)))
            .and_then(|(r, pointer)| self.root.pointer(pointer).map(|t| (r, t)));
        let size = match target {
            Some((_, t)) => t.to_string().len(),
            None => 0,
        };
        let target = target.filter(|_| size <= self.bytes_left);
        self.bytes_left = self.bytes_left.saturating_sub(size);
        let mut merged = Map::new();
        match target {
            Some((reference, Value::Object(target))) => {
                merged.extend(target.clone());
                self.refs.push(reference.to_string());
            }
            _ => {
                // Remote, missing, recursive or over the budget: an untyped object is the
                // closest Gemini can hold.
                self.lossy = true;
                merged.insert("type".into(), json!("object"));
            }
        }
        let pushed = matches!(target, Some((_, Value::Object(_))));
        // Keywords beside a `$ref` (a description, typically) refine the target.
        for (key, value) in object {
            if key != "$ref" {
                merged.insert(key.clone(), value.clone());
            }
        }
        let cleaned = self.clean(&Value::Object(merged), depth + 1);
        if pushed {
            self.refs.pop();
        }
        cleaned
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// `null` where a list or map is expected means empty, as for a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResponseWire {
    #[serde(deserialize_with = "null_as_default")]
    candidates: Vec<CandidateWire>,
    prompt_feedback: Option<PromptFeedbackWire>,
    usage_metadata: Option<UsageWire>,
    /// Present when a stream breaks after it started.
    error: Option<ErrorWire>,
}

impl ResponseWire {
    /// The first candidate; only one fits a neutral reply (`candidateCount` > 1 is for the
    /// client to ask of a Gemini-format endpoint).
    fn candidate(&self) -> Option<&CandidateWire> {
        self.candidates
            .iter()
            .find(|c| c.index.unwrap_or(0) == 0)
            .or_else(|| self.candidates.first())
    }

    fn prompt_blocked(&self) -> bool {
        self.candidate().is_none() && self.prompt_feedback.is_some()
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct CandidateWire {
    content: Option<ContentWire>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

impl CandidateWire {
    fn parts(&self) -> &[PartWire] {
        self.content.as_ref().map_or(&[], |c| c.parts.as_slice())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContentWire {
    #[serde(deserialize_with = "null_as_default")]
    parts: Vec<PartWire>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PartWire {
    text: Option<String>,
    thought: Option<bool>,
    thought_signature: Option<String>,
    function_call: Option<FunctionCallWire>,
    inline_data: Option<BlobWire>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionCallWire {
    id: Option<String>,
    name: Option<String>,
    args: Option<Value>,
}

impl FunctionCallWire {
    /// Gemini has no call ids (newer replies sometimes do): make one from the call's position.
    fn to_tool_call(&self, index: usize) -> ToolCall {
        let arguments = match &self.args {
            None | Some(Value::Null) => "{}".to_string(),
            Some(args) => args.to_string(),
        };
        ToolCall {
            id: self
                .id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: self.name.clone().unwrap_or_default(),
            arguments,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BlobWire {
    mime_type: Option<String>,
    data: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedbackWire {
    block_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default, rename_all = "camelCase")]
struct UsageWire {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    /// Results of Gemini's own tools (search, URL context) read as input.
    tool_use_prompt_token_count: Option<u64>,
}

impl UsageWire {
    /// Gemini's `promptTokenCount` includes cached tokens (OpenAI's convention), while its
    /// `candidatesTokenCount` excludes thoughts, which are output too.
    fn to_usage(self) -> Usage {
        let prompt = self
            .prompt_token_count
            .unwrap_or(0)
            .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0));
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        let completion = self
            .candidates_token_count
            .unwrap_or(0)
            .saturating_add(thoughts);
        Usage::from_inclusive(
            prompt,
            completion,
            self.cached_content_token_count.unwrap_or(0),
            0,
            thoughts,
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorWire {
    code: Option<Value>,
    message: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorWire,
}

fn map_finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => FinishReason::Error,
        // STOP, and whatever Gemini adds later: the client acts on calls when there are some.
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// A Gemini `generateContent` reply → neutral response. `model`, `id` and `created_s` are the
/// relay's (Gemini's `modelVersion`/`responseId` are not what the client asked for).
pub fn decode_response(
    bytes: &[u8],
    model: &str,
    id: &str,
    created_s: i64,
) -> Result<ChatResponse, String> {
    let wire = parse_chunk(bytes).map_err(|e| format!("invalid Gemini response body: {e}"))?;
    if let Some(error) = &wire.error {
        return Err(error
            .message
            .clone()
            .unwrap_or_else(|| "Gemini returned an error".into()));
    }

    let mut text = String::new();
    let mut reasoning = String::new();
    let mut images = Vec::new();
    let mut tool_calls = Vec::new();
    let mut signature = None;
    let parts = wire.candidate().map_or(&[][..], CandidateWire::parts);
    for part in parts {
        if signature.is_none() {
            signature.clone_from(&part.thought_signature);
        }
        if let Some(call) = &part.function_call {
            tool_calls.push(call.to_tool_call(tool_calls.len()));
        } else if let Some(t) = &part.text {
            if part.thought == Some(true) {
                reasoning.push_str(t);
            } else {
                text.push_str(t);
            }
        } else if let Some(BlobWire {
            mime_type: Some(media_type),
            data: Some(data),
        }) = &part.inline_data
        {
            images.push(Part::Image(ImageSource::Base64 {
                media_type: media_type.clone(),
                data: data.clone(),
            }));
        }
    }

    let finish_reason = if wire.prompt_blocked() {
        Some(FinishReason::ContentFilter)
    } else {
        wire.candidate()
            .and_then(|c| c.finish_reason.as_deref())
            .map(|r| map_finish_reason(r, !tool_calls.is_empty()))
    };

    // A reply of only calls has no content; otherwise the client sees text, even empty.
    let mut content = Vec::new();
    if !text.is_empty() || (tool_calls.is_empty() && images.is_empty()) {
        content.push(Part::Text(text));
    }
    content.extend(images);
    let mut message = Message::new(Role::Assistant, content);
    message.tool_calls = tool_calls;
    message.reasoning = (!reasoning.is_empty()).then_some(reasoning);
    message.reasoning_signature = signature;

    Ok(ChatResponse {
        id: id.to_string(),
        model: model.to_string(),
        created_s,
        message,
        finish_reason,
        stop_sequence: None,
        usage: wire.usage_metadata.map(UsageWire::to_usage),
    })
}

/// Parsed via [`Value`] so that only an object is accepted: serde would read a struct from a
/// JSON array too, by position.
fn parse_chunk(bytes: &[u8]) -> Result<ResponseWire, String> {
    match serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string())? {
        object @ Value::Object(_) => ResponseWire::deserialize(object).map_err(|e| e.to_string()),
        _ => Err("not a JSON object".into()),
    }
}

/// Gemini error body `{"error":{"code","message","status"}}` → (message, status such as
/// `RESOURCE_EXHAUSTED`). Vertex sometimes wraps it in a one-element array; both are read.
pub fn parse_error_body(bytes: &[u8]) -> (Option<String>, Option<String>) {
    let envelope = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(list)) => list.into_iter().next(),
        Ok(object @ Value::Object(_)) => Some(object),
        _ => None,
    };
    match envelope.and_then(|e| ErrorEnvelope::deserialize(e).ok()) {
        Some(ErrorEnvelope { error }) => (error.message, error.status),
        None => (None, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// A Gemini stream → neutral [`StreamEvent`]s. Each element is a whole
/// `GenerateContentResponse` carrying the new parts only, and usage so far. Both of Google's
/// framings are read, told apart by the first byte: SSE (`streamGenerateContent?alt=sse`,
/// what the relay asks for) and the streamed JSON array sent without `alt=sse` (what a
/// Gemini client passed through to a Gemini channel may have asked for).
pub struct StreamDecoder {
    /// Boxed so the relay's enum of decoders stays small whichever one a stream uses.
    state: Box<StreamState>,
}

enum Framing {
    /// Nothing but whitespace seen yet.
    Unknown,
    Sse(SseParser, Vec<SseEvent>),
    JsonArray(JsonArrayParser, Vec<String>),
}

struct StreamState {
    framing: Framing,
    model: String,
    id: String,
    started: bool,
    next_tool_index: usize,
    finished: bool,
    usage: Option<Usage>,
    signature_sent: bool,
}

impl StreamDecoder {
    pub fn new(model: &str, id: &str) -> Self {
        StreamDecoder {
            state: Box::new(StreamState {
                framing: Framing::Unknown,
                model: model.to_string(),
                id: id.to_string(),
                started: false,
                next_tool_index: 0,
                finished: false,
                usage: None,
                signature_sent: false,
            }),
        }
    }

    /// A framing error (a line or an element over the size limit) is an [`SseError`] in
    /// either framing.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        self.state.feed(Some(chunk), out)
    }

    /// End of stream: a last event without its blank line (or an array never closed) is still
    /// decoded (Gemini's final chunk carries the finish reason and usage).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        self.state.feed(None, out)
    }
}

impl StreamState {
    /// `None` is the end of the stream.
    fn feed(&mut self, chunk: Option<&[u8]>, out: &mut Vec<StreamEvent>) -> Result<(), SseError> {
        if let (Framing::Unknown, Some(bytes)) = (&self.framing, chunk) {
            // Leading whitespace means nothing in either framing; the first other byte tells
            // which one this is.
            let Some(start) = bytes.iter().position(|b| !b.is_ascii_whitespace()) else {
                return Ok(());
            };
            self.framing = match bytes[start] {
                b'[' => Framing::JsonArray(JsonArrayParser::new(), Vec::new()),
                _ => Framing::Sse(SseParser::new(), Vec::new()),
            };
            return self.feed_known(Some(&bytes[start..]), out);
        }
        self.feed_known(chunk, out)
    }

    fn feed_known(
        &mut self,
        chunk: Option<&[u8]>,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), SseError> {
        let mut data = Vec::new();
        let result = match &mut self.framing {
            Framing::Unknown => Ok(()),
            Framing::Sse(parser, events) => {
                let result = match chunk {
                    Some(chunk) => parser.push(chunk, events),
                    None => parser.finish(events),
                };
                data.extend(events.drain(..).map(|e| e.data));
                result
            }
            Framing::JsonArray(parser, elements) => {
                let result = match chunk {
                    Some(chunk) => parser.push(chunk, elements),
                    None => parser.finish(elements),
                };
                data.append(elements);
                result
            }
        };
        for element in &data {
            self.on_chunk(element, out);
        }
        result
    }

    fn on_chunk(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        let chunk = match parse_chunk(data.as_bytes()) {
            Ok(chunk) => chunk,
            Err(_) => {
                out.push(StreamEvent::Error {
                    status: 502,
                    message: "Gemini sent a stream chunk that is not valid JSON".into(),
                });
                return;
            }
        };
        if let Some(error) = &chunk.error {
            out.push(stream_error(error));
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: self.model.clone(),
            });
        }

        let mut saw_call = false;
        let parts = chunk.candidate().map_or(&[][..], CandidateWire::parts);
        for part in parts {
            if let Some(call) = &part.function_call {
                let index = self.next_tool_index;
                self.next_tool_index += 1;
                saw_call = true;
                let call = call.to_tool_call(index);
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id: call.id,
                    name: call.name,
                });
                out.push(StreamEvent::ToolCallDelta {
                    index,
                    arguments: call.arguments,
                });
            } else if let Some(text) = part.text.as_ref().filter(|t| !t.is_empty()) {
                if part.thought == Some(true) {
                    out.push(StreamEvent::ReasoningDelta(text.clone()));
                } else {
                    out.push(StreamEvent::TextDelta(text.clone()));
                }
            }
            // One signature per reply, as in `decode_response`: the first carries the state.
            if let Some(signature) = &part.thought_signature {
                if !self.signature_sent {
                    self.signature_sent = true;
                    out.push(StreamEvent::ReasoningSignature(signature.clone()));
                }
            }
        }

        if !self.finished {
            let reason = if chunk.prompt_blocked() {
                Some(FinishReason::ContentFilter)
            } else {
                chunk
                    .candidate()
                    .and_then(|c| c.finish_reason.as_deref())
                    .map(|r| map_finish_reason(r, saw_call || self.next_tool_index > 0))
            };
            if let Some(reason) = reason {
                self.finished = true;
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
            }
        }

        if let Some(usage) = chunk.usage_metadata.map(UsageWire::to_usage) {
            if self.usage != Some(usage) {
                self.usage = Some(usage);
                out.push(StreamEvent::Usage(usage));
            }
        }
    }
}

fn stream_error(error: &ErrorWire) -> StreamEvent {
    let status = error
        .code
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(502);
    let message = error
        .message
        .clone()
        .or_else(|| error.status.clone())
        .unwrap_or_else(|| "Gemini reported an error mid-stream".into());
    StreamEvent::Error { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::neutral::Tool;

    const TEXT: &[u8] = include_bytes!("../../tests/fixtures/gemini/reply_text.json");
    const FUNCTION_CALL: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/reply_function_call.json");
    const PARALLEL: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/reply_parallel_function_calls.json");
    const JSON_MODE: &[u8] = include_bytes!("../../tests/fixtures/gemini/reply_json_mode.json");
    const SAFETY_BLOCKED: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/reply_safety_blocked.json");
    const THINKING: &[u8] = include_bytes!("../../tests/fixtures/gemini/reply_thinking.json");
    const ERROR_429: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/error_resource_exhausted_429.json");
    const ERROR_400: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/error_invalid_argument_400.json");
    const STREAM_TEXT: &[u8] = include_bytes!("../../tests/fixtures/gemini/stream_text.sse");
    const STREAM_FUNCTION_CALL: &[u8] =
        include_bytes!("../../tests/fixtures/gemini/stream_function_call.sse");
    const STREAM_SAFETY: &[u8] = include_bytes!("../../tests/fixtures/gemini/stream_safety.sse");

    fn decode(bytes: &[u8]) -> ChatResponse {
        decode_response(bytes, "gemini-2.5-flash", "chatcmpl-1", 1_700_000_000).expect("decodes")
    }

    fn args(call: &ToolCall) -> Value {
        serde_json::from_str(&call.arguments).expect("arguments are JSON")
    }

    fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn tool_result(id: &str, text: &str) -> Message {
        let mut m = Message::text(Role::Tool, text);
        m.tool_call_id = Some(id.into());
        m
    }

    fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: "gemini-2.5-flash".into(),
            messages,
            ..ChatRequest::default()
        }
    }

    fn rich_request() -> ChatRequest {
        let mut assistant = Message::text(Role::Assistant, "Let me check.");
        assistant.tool_calls = vec![tool_call(
            "call_0",
            "get_weather",
            r#"{"location":"Paris","unit":"celsius"}"#,
        )];
        assistant.reasoning = Some("The user wants weather.".into());
        let mut extra = Map::new();
        extra.insert("logit_bias".into(), json!({"50256": -100}));
        ChatRequest {
            model: "gemini-2.5-flash".into(),
            system: vec!["You are terse.".into(), "Answer in English.".into()],
            messages: vec![
                Message::new(
                    Role::User,
                    vec![
                        Part::Text("What is in these images, and the weather in Paris?".into()),
                        Part::Image(ImageSource::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        }),
                        Part::Image(ImageSource::Url(
                            "https://example.com/photos/cat.webp?size=large".into(),
                        )),
                    ],
                ),
                assistant,
                tool_result("call_0", r#"{"temperature":21,"sky":"clear"}"#),
                Message::text(Role::User, "Thanks. Summarise as JSON."),
            ],
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Current weather for a city".into()),
                parameters: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "City name"},
                        "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"],
                    "additionalProperties": false
                }),
            }],
            tool_choice: Some(ToolChoice::Named("get_weather".into())),
            parallel_tool_calls: Some(false),
            max_tokens: Some(1024),
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(40),
            stop: vec!["END".into()],
            seed: Some(42),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "summary".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"summary": {"type": "string"}, "temperature": {"type": "number"}},
                    "required": ["summary"],
                    "additionalProperties": false
                }),
                strict: true,
            }),
            reasoning: Some(Reasoning::Budget(2048)),
            user: Some("user-123".into()),
            stream: true,
            extra,
            ..ChatRequest::default()
        }
    }

    #[test]
    fn encodes_a_rich_request() {
        let (body, drops) = encode_request(&rich_request());
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in these images, and the weather in Paris?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/webp",
                                  "fileUri": "https://example.com/photos/cat.webp?size=large"}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Let me check."},
                    {"functionCall": {"name": "get_weather",
                                      "args": {"location": "Paris", "unit": "celsius"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather",
                                          "response": {"temperature": 21, "sky": "clear"}}},
                    {"text": "Thanks. Summarise as JSON."}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {"type": "string", "description": "City name"},
                        "unit": {"type": "string", "nullable": true,
                                 "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["location"]
                }
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                                     "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "temperature": 0.7,
                "topP": 0.9,
                "topK": 40,
                "maxOutputTokens": 1024,
                "stopSequences": ["END"],
                "seed": 42,
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "object",
                    "properties": {"summary": {"type": "string"}, "temperature": {"type": "number"}},
                    "required": ["summary"]
                },
                "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true}
            }
        });
        assert_eq!(body, expected);
        assert_eq!(
            drops,
            vec![
                Drop::approximated("messages.image_url"),
                Drop::approximated("tools.parameters"),
                Drop::approximated("response_format"),
                Drop::dropped("user"),
                Drop::dropped("parallel_tool_calls"),
                Drop::dropped("logit_bias"),
            ]
        );
    }

    #[test]
    fn request_paths() {
        assert_eq!(
            request_path("gemini-2.5-flash", false),
            "/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            request_path("models/gemini-2.5-flash", true),
            "/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            request_path("tunedModels/my-model-7", false),
            "/tunedModels/my-model-7:generateContent"
        );
        assert_eq!(
            request_path("bad?x=1#y", false),
            "/models/bad%3Fx%3D1%23y:generateContent"
        );
    }

    #[test]
    fn tool_results_find_the_nearest_call_and_merge_into_one_turn() {
        let mut first = Message::new(Role::Assistant, vec![]);
        first.tool_calls = vec![tool_call("call_0", "old_tool", "{}")];
        let mut second = Message::new(Role::Assistant, vec![]);
        second.tool_calls = vec![
            tool_call("call_0", "sum", r#"{"x":1}"#),
            tool_call("call_1", "multiply", "not json"),
        ];
        let mut failed = tool_result("call_1", "division by zero");
        failed.is_error = true;
        let req = request(vec![
            Message::text(Role::User, "go"),
            first,
            tool_result("call_0", "done"),
            second,
            tool_result("call_0", "3"),
            failed,
            tool_result("call_9", "orphan"),
        ]);
        let (body, drops) = encode_request(&req);
        let contents = body["contents"].as_array().expect("contents");
        assert_eq!(contents.len(), 5);
        assert_eq!(
            contents[2]["parts"][0],
            json!({"functionResponse": {"name": "old_tool", "response": {"content": "done"}}})
        );
        assert_eq!(
            contents[3]["parts"],
            json!([
                {"functionCall": {"name": "sum", "args": {"x": 1}}},
                {"functionCall": {"name": "multiply", "args": {}}}
            ])
        );
        assert_eq!(contents[4]["role"], "user");
        assert_eq!(
            contents[4]["parts"],
            json!([
                {"functionResponse": {"name": "sum", "response": {"content": "3"}}},
                {"functionResponse": {"name": "multiply",
                                      "response": {"error": "division by zero"}}},
                {"functionResponse": {"name": "call_9", "response": {"content": "orphan"}}}
            ])
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("messages.tool_calls.arguments"),
                Drop::approximated("messages.tool_call_id"),
            ]
        );
    }

    #[test]
    fn thought_signatures_go_back_where_gemini_put_them() {
        let mut with_calls = Message::text(Role::Assistant, "Checking.");
        with_calls.tool_calls = vec![tool_call("call_0", "a", "{}"), tool_call("call_1", "b", "")];
        with_calls.reasoning_signature = Some("c2lnLTE=".into());
        let mut text_only = Message::text(Role::Assistant, "Hi.");
        text_only.reasoning_signature = Some("c2lnLTI=".into());
        let (body, _) = encode_request(&request(vec![
            Message::text(Role::User, "q"),
            with_calls,
            tool_result("call_0", "1"),
            tool_result("call_1", "2"),
            text_only,
        ]));
        let parts = &body["contents"][1]["parts"];
        assert_eq!(parts[0], json!({"text": "Checking."}));
        assert_eq!(parts[1]["thoughtSignature"], "c2lnLTE=");
        assert!(parts[2].get("thoughtSignature").is_none());
        assert_eq!(
            body["contents"][3]["parts"][0]["thoughtSignature"],
            "c2lnLTI="
        );

        // Gemini 3 refuses calls without a signature; others get none invented.
        let mut lost = Message::new(Role::Assistant, vec![]);
        lost.tool_calls = vec![tool_call("call_0", "a", "{}")];
        let mut req = request(vec![Message::text(Role::User, "q"), lost]);
        let (body, _) = encode_request(&req);
        assert!(body["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none());
        req.model = "gemini-3-pro-preview".into();
        let (body, _) = encode_request(&req);
        assert_eq!(
            body["contents"][1]["parts"][0]["thoughtSignature"],
            SKIP_SIGNATURE
        );
    }

    #[test]
    fn images_from_data_urls_and_mime_guesses() {
        let (body, drops) = encode_request(&request(vec![Message::new(
            Role::User,
            vec![
                Part::Image(ImageSource::Url("data:image/gif;base64,R0lGOD==".into())),
                Part::Image(ImageSource::Url("data:text/plain,hello".into())),
                Part::Image(ImageSource::Url("https://x.test/a.PNG#frag".into())),
                Part::Image(ImageSource::Url("https://x.test/noext".into())),
                Part::Text(String::new()),
            ],
        )]));
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "image/gif", "data": "R0lGOD=="}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.PNG#frag"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/noext"}}
            ])
        );
        assert_eq!(
            drops,
            vec![
                Drop::dropped("messages.image_url"),
                Drop::approximated("messages.image_url"),
            ]
        );
    }

    #[test]
    fn tool_choices_and_empty_tool_parameters() {
        let mut req = request(vec![Message::text(Role::User, "q")]);
        req.tools = vec![Tool {
            name: "now".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {}}),
        }];
        for (choice, mode) in [
            (ToolChoice::Auto, "AUTO"),
            (ToolChoice::None, "NONE"),
            (ToolChoice::Required, "ANY"),
        ] {
            req.tool_choice = Some(choice);
            let (body, drops) = encode_request(&req);
            assert_eq!(
                body["toolConfig"],
                json!({"functionCallingConfig": {"mode": mode}})
            );
            assert_eq!(
                body["tools"],
                json!([{"functionDeclarations": [{"name": "now"}]}])
            );
            assert!(drops.is_empty());
        }
        req.tools.clear();
        let (body, drops) = encode_request(&req);
        assert!(body.get("toolConfig").is_none() && body.get("tools").is_none());
        assert_eq!(drops, vec![Drop::dropped("tool_choice")]);
    }

    #[test]
    fn schema_cleaning() {
        let schema = json!({
            "$defs": {
                "Address": {"type": "object", "properties": {"city": {"type": "string"}}},
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
            },
            "type": "object",
            "properties": {
                "home": {"$ref": "#/$defs/Address", "description": "Where they live"},
                "work": {"allOf": [{"$ref": "#/$defs/Address"}]},
                "age": {"type": "integer", "format": "int32", "minimum": 0},
                "site": {"type": "string", "format": "uri"},
                "kind": {"const": "person"},
                "id": {"type": ["string", "integer"]},
                "either": {"oneOf": [{"type": "string"}, {"type": "number"}]}
            }
        });
        let (cleaned, lossy) = clean_schema(&schema);
        assert!(lossy, "uri format and oneOf are lossy");
        let address = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        assert_eq!(
            cleaned,
            Some(json!({
                "type": "object",
                "properties": {
                    "home": {"type": "object", "properties": {"city": {"type": "string"}},
                             "description": "Where they live"},
                    "work": address,
                    "age": {"type": "integer", "format": "int32", "minimum": 0},
                    "site": {"type": "string"},
                    "kind": {"enum": ["person"]},
                    "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "either": {"anyOf": [{"type": "string"}, {"type": "number"}]}
                }
            }))
        );

        // Inlining local refs loses nothing; recursion is cut, and says so.
        let (_, lossy) = clean_schema(&json!({
            "definitions": {"A": {"type": "string"}},
            "type": "object", "properties": {"a": {"$ref": "#/definitions/A"}}
        }));
        assert!(!lossy);
        let (cleaned, lossy) = clean_schema(&json!({"$ref": "#/$defs/Node", "$defs": {
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
        }}));
        assert!(lossy);
        assert_eq!(
            cleaned,
            Some(json!({"type": "object", "properties": {"next": {"type": "object"}}}))
        );
        let (cleaned, lossy) = clean_schema(&json!({"$ref": "https://example.com/s.json"}));
        assert!(lossy);
        assert_eq!(cleaned, Some(json!({"type": "object"})));
    }

    #[test]
    fn schema_bombs_are_bounded() {
        // Each level references the next twice: 2^40 nodes if inlined naively.
        let mut defs = Map::new();
        for i in 0..40 {
            let next = format!("#/$defs/D{}", i + 1);
            defs.insert(
                format!("D{i}"),
                json!({"type": "object", "properties": {"a": {"$ref": next}, "b": {"$ref": next}}}),
            );
        }
        defs.insert("D40".into(), json!({"type": "string"}));
        let (cleaned, lossy) = clean_schema(&json!({"$defs": defs, "$ref": "#/$defs/D0"}));
        assert!(lossy);
        assert!(cleaned.expect("schema").to_string().len() < 2_000_000);

        let mut deep = json!({"type": "string"});
        for _ in 0..120 {
            deep = json!({"type": "array", "items": deep});
        }
        let (_, lossy) = clean_schema(&deep);
        assert!(lossy);
    }

    #[test]
    fn generation_config_variants() {
        let mut req = request(vec![Message::text(Role::User, "q")]);
        req.response_format = Some(ResponseFormat::JsonObject);
        req.reasoning = Some(Reasoning::Effort("medium".into()));
        req.n = Some(2);
        req.presence_penalty = Some(0.5);
        req.frequency_penalty = Some(-0.5);
        req.logprobs = Some(true);
        req.top_logprobs = Some(3);
        req.seed = Some(1 << 40);
        req.stop = (0..7).map(|i| format!("s{i}")).collect();
        req.parallel_tool_calls = Some(true);
        let (body, drops) = encode_request(&req);
        assert_eq!(
            body["generationConfig"],
            json!({
                "stopSequences": ["s0", "s1", "s2", "s3", "s4"],
                "seed": 0,
                "candidateCount": 2,
                "presencePenalty": 0.5,
                "frequencyPenalty": -0.5,
                "responseLogprobs": true,
                "logprobs": 3,
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}
            })
        );
        assert_eq!(
            drops,
            vec![
                Drop::approximated("stop"),
                Drop::approximated("seed"),
                Drop::approximated("reasoning_effort"),
            ]
        );

        for (effort, budget) in [("low", 1024), ("high", 24576)] {
            req.reasoning = Some(Reasoning::Effort(effort.into()));
            let (body, _) = encode_request(&req);
            assert_eq!(
                body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
                budget
            );
        }
        req.reasoning = Some(Reasoning::Disabled);
        let (body, _) = encode_request(&req);
        assert_eq!(
            body["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 0})
        );

        let (body, drops) = encode_request(&request(vec![Message::text(Role::User, "q")]));
        assert_eq!(
            body,
            json!({"contents": [{"role": "user", "parts": [{"text": "q"}]}]})
        );
        assert!(drops.is_empty());
    }

    #[test]
    fn decodes_text() {
        let r = decode(TEXT);
        assert_eq!(r.id, "chatcmpl-1");
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.created_s, 1_700_000_000);
        assert_eq!(r.message.role, Role::Assistant);
        assert_eq!(
            r.message.joined_text(),
            "The capital of Wyoming is **Cheyenne**.\n"
        );
        assert!(r.message.tool_calls.is_empty());
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));
        assert_eq!(r.usage, Some(Usage::new(7, 10)));
    }

    #[test]
    fn decodes_a_function_call() {
        let r = decode(FUNCTION_CALL);
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        assert!(r.message.content.is_empty());
        let [call] = r.message.tool_calls.as_slice() else {
            panic!("one call expected: {:?}", r.message.tool_calls);
        };
        assert_eq!(
            (call.id.as_str(), call.name.as_str()),
            ("call_0", "get_weather")
        );
        assert_eq!(
            args(call),
            json!({"location": "Boston, MA", "unit": "fahrenheit"})
        );
        assert_eq!(
            call.arguments,
            r#"{"location":"Boston, MA","unit":"fahrenheit"}"#
        );
        assert_eq!(r.usage, Some(Usage::new(62, 24)));
    }

    #[test]
    fn decodes_parallel_function_calls() {
        let r = decode(PARALLEL);
        assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
        let calls: Vec<(&str, &str, Value)> = r
            .message
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), args(c)))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("call_0", "sum", json!({"x": 2, "y": 1})),
                ("fc_7b2", "multiply", json!({"x": 4, "y": 3})),
                ("call_2", "subtract", json!({"x": 6, "y": 5})),
            ]
        );
    }

    #[test]
    fn decodes_json_mode() {
        let r = decode(JSON_MODE);
        let value: Value = serde_json::from_str(&r.message.joined_text()).expect("JSON text");
        assert_eq!(value["recipe_name"], "Chocolate Chip Cookies");
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn decodes_a_blocked_prompt() {
        let r = decode(SAFETY_BLOCKED);
        assert_eq!(r.message.joined_text(), "");
        assert_eq!(r.message.content, vec![Part::Text(String::new())]);
        assert_eq!(r.finish_reason, Some(FinishReason::ContentFilter));
        assert_eq!(r.usage, Some(Usage::new(9, 0)));
    }

    #[test]
    fn decodes_thinking_without_double_counting() {
        let r = decode(THINKING);
        assert!(r
            .message
            .reasoning
            .as_deref()
            .is_some_and(|t| t.starts_with("**Counting the days**")));
        assert_eq!(
            r.message.joined_text(),
            "There are 66 days until New Year's Eve."
        );
        assert_eq!(
            r.message.reasoning_signature.as_deref(),
            Some("CtQOAVSoXO74Pm==")
        );
        let usage = r.usage.expect("usage");
        // promptTokenCount 12013 (11243 cached), candidates 15, thoughts 73, total 12101.
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 12013,
                completion_tokens: 88,
                cache_read_tokens: 11243,
                cache_write_tokens: 0,
                reasoning_tokens: 73,
            }
        );
        assert_eq!(usage.total_tokens(), 12101);
        assert_eq!(usage.uncached_prompt_tokens(), 770);
    }

    #[test]
    fn finish_reasons() {
        for (gemini, calls, neutral) in [
            ("STOP", false, FinishReason::Stop),
            ("STOP", true, FinishReason::ToolCalls),
            ("MAX_TOKENS", true, FinishReason::Length),
            ("SAFETY", false, FinishReason::ContentFilter),
            ("RECITATION", false, FinishReason::ContentFilter),
            ("BLOCKLIST", false, FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
            ("SPII", false, FinishReason::ContentFilter),
            ("IMAGE_SAFETY", false, FinishReason::ContentFilter),
            ("MALFORMED_FUNCTION_CALL", false, FinishReason::Error),
            ("OTHER", false, FinishReason::Stop),
            ("LANGUAGE", false, FinishReason::Stop),
        ] {
            assert_eq!(map_finish_reason(gemini, calls), neutral, "{gemini}");
        }
    }

    #[test]
    fn decode_is_lenient_and_refuses_garbage() {
        let r = decode(br#"{"candidates":null,"usageMetadata":null}"#);
        assert_eq!(r.finish_reason, None);
        assert_eq!(r.usage, None);
        let r = decode(
            br#"{"candidates":[{"content":{"role":"model","parts":[{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]},"finishReason":"STOP"}]}"#,
        );
        assert_eq!(
            r.message.content,
            vec![Part::Image(ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            })]
        );
        assert!(decode_response(b"<html>", "m", "i", 0).is_err());
        assert!(decode_response(b"[1]", "m", "i", 0).is_err());
        assert_eq!(
            decode_response(ERROR_429, "m", "i", 0).unwrap_err(),
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
        );
    }

    #[test]
    fn error_bodies() {
        let (message, status) = parse_error_body(ERROR_429);
        assert!(message.is_some_and(|m| m.starts_with("You exceeded your current quota")));
        assert_eq!(status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(
            parse_error_body(ERROR_400),
            (
                Some("* GenerateContentRequest.contents: contents is not specified\n".into()),
                Some("INVALID_ARGUMENT".into())
            )
        );
        assert_eq!(
            parse_error_body(
                br#"[{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}]"#
            ),
            (
                Some("Resource exhausted.".into()),
                Some("RESOURCE_EXHAUSTED".into())
            )
        );
        assert_eq!(parse_error_body(b"<html>502</html>"), (None, None));
        assert_eq!(parse_error_body(b"[]"), (None, None));
    }

    fn stream_chunks(chunks: &[&[u8]]) -> Vec<StreamEvent> {
        let mut decoder = StreamDecoder::new("gemini-2.5-flash", "chatcmpl-1");
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out).expect("push");
        }
        decoder.finish(&mut out).expect("finish");
        out
    }

    /// The fixture whole, split at every byte into two pushes, and one byte at a time must
    /// all decode the same.
    fn stream(bytes: &[u8]) -> Vec<StreamEvent> {
        let whole = stream_chunks(&[bytes]);
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(stream_chunks(&[a, b]), whole, "split at byte {split}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(stream_chunks(&singles), whole, "one byte at a time");
        whole
    }

    fn start() -> StreamEvent {
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gemini-2.5-flash".into(),
        }
    }

    #[test]
    fn streams_text() {
        assert!(STREAM_TEXT.windows(2).any(|w| w == b"\r\n"), "CRLF framing");
        assert_eq!(
            stream(STREAM_TEXT),
            vec![
                start(),
                StreamEvent::TextDelta("The".into()),
                StreamEvent::Usage(Usage::new(7, 0)),
                StreamEvent::TextDelta(" capital of Wyoming".into()),
                StreamEvent::TextDelta(" is **Cheyenne**.\n".into()),
                StreamEvent::Finish {
                    reason: FinishReason::Stop,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::new(7, 10)),
            ]
        );
    }

    #[test]
    fn streams_thinking_and_function_calls() {
        let events = stream(STREAM_FUNCTION_CALL);
        let usage = |prompt, thoughts, candidates| {
            StreamEvent::Usage(Usage::from_inclusive(
                prompt,
                thoughts + candidates,
                0,
                0,
                thoughts,
            ))
        };
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::ReasoningDelta(
                    "**Planning the lookups**\n\nI need the weather in two cities.\n\n".into()
                ),
                usage(38, 68, 0),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_0".into(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: r#"{"location":"Paris"}"#.into()
                },
                StreamEvent::ReasoningSignature("CiIBVKhc7vB+vaaq6rA/KC79Ts7i==".into()),
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "call_1".into(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 1,
                    arguments: r#"{"location":"Tokyo"}"#.into()
                },
                StreamEvent::Finish {
                    reason: FinishReason::ToolCalls,
                    stop_sequence: None
                },
                usage(38, 168, 12),
            ]
        );
        // The last usage wins and counts thoughts once, inside completion.
        let Some(StreamEvent::Usage(last)) = events.last() else {
            panic!("usage last");
        };
        assert_eq!(last.total_tokens(), 38 + 168 + 12);
        assert_eq!(last.reasoning_tokens, 168);
    }

    /// A fixture's SSE events as the JSON array Google streams without `alt=sse`.
    fn as_json_array(sse: &[u8]) -> String {
        let text = String::from_utf8_lossy(sse);
        let elements: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .collect();
        format!("\r\n[{}]", elements.join("\r\n,\r\n"))
    }

    #[test]
    fn streams_the_json_array_framing_alike() {
        for fixture in [STREAM_TEXT, STREAM_FUNCTION_CALL, STREAM_SAFETY] {
            let array = as_json_array(fixture);
            assert_eq!(stream(array.as_bytes()), stream(fixture));
        }
        // Cut off before its last element closes: what came whole is kept, the rest reported.
        let array = as_json_array(STREAM_TEXT);
        let cut = &array.as_bytes()[..array.len() - 20];
        let events = stream_chunks(&[cut]);
        assert_eq!(events[1], StreamEvent::TextDelta("The".into()));
        assert!(matches!(
            events.last(),
            Some(StreamEvent::Error { status: 502, .. })
        ));
    }

    #[test]
    fn streams_a_blocked_prompt() {
        assert_eq!(
            stream(STREAM_SAFETY),
            vec![
                start(),
                StreamEvent::Finish {
                    reason: FinishReason::ContentFilter,
                    stop_sequence: None
                },
                StreamEvent::Usage(Usage::new(9, 0)),
            ]
        );
    }

    #[test]
    fn stream_errors_and_odd_chunks() {
        let events = stream_chunks(&[
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"SAFETY\"}]}\n\n",
            b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"STOP\"}]}\n\n",
            b": keep-alive\n\ndata: not json\n\n",
            b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}",
        ]);
        assert_eq!(
            events,
            vec![
                start(),
                StreamEvent::TextDelta("a".into()),
                StreamEvent::Finish {
                    reason: FinishReason::ContentFilter,
                    stop_sequence: None
                },
                StreamEvent::Error {
                    status: 502,
                    message: "Gemini sent a stream chunk that is not valid JSON".into()
                },
                StreamEvent::Error {
                    status: 503,
                    message: "The model is overloaded.".into()
                },
            ]
        );
    }

    #[test]
    fn ref_inlining_cannot_amplify_a_request() {
        // 300 properties all referring to one 8 KB definition: inlined naively, 2.4 MB.
        let description = "x".repeat(8000);
        let properties: Map<String, Value> = (0..300)
            .map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/a"})))
            .collect();
        let schema = json!({"type": "object", "$defs": {"a": {"type": "string", "description": description}}, "properties": properties});
        let input = schema.to_string().len();
        let (cleaned, lossy) = clean_schema(&schema);
        let output = cleaned.unwrap().to_string().len();
        assert!(lossy, "what could not be inlined is reported");
        assert!(
            output <= 2 * input + 32 * 1024,
            "{input} bytes in, {output} out"
        );
    }
}
