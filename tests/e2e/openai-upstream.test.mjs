// Relaying to an OpenAI-format upstream (the fake in fake-openai.mjs): what the client gets, what
// the upstream is sent, and that streams are piped chunk by chunk.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { startRelay, sdk, sse, sseJson, sseEvents, requestId, within, UPSTREAM_KEY } from "./harness.mjs";
import {
  startFakeOpenAI,
  CHAT_TEXT,
  CHAT_USAGE,
  CHAT_STREAM_PIECES,
  CHAT_STREAM_USAGE,
  EMBEDDING_DIM,
} from "./fake-openai.mjs";

describe("OpenAI-format upstream", () => {
  let relay, fake, s, client;
  before(async () => {
    fake = await startFakeOpenAI();
    relay = await startRelay();
    s = await relay.seed({
      upstreamBaseUrl: fake.baseUrl,
      models: {
        "pub-chat": "gpt-test-up",
        "pub-slow": "slow-stream",
        "pub-instruct": "instruct-fake",
        "pub-embed": "text-embedding-fake",
      },
    });
    client = await sdk(relay, s.key);
  }, { timeout: 60_000 });
  after(async () => {
    await fake?.close();
    await relay?.dispose();
  }, { timeout: 30_000 });

  /** A user message carrying a unique marker, to find the upstream request it caused. */
  const marked = () => {
    const marker = `marker-${randomUUID()}`;
    return { marker, messages: [{ role: "user", content: `Say hello (${marker})` }] };
  };
  const upstreamOf = (marker) => fake.waitForRequest((r) => r.rawBody.includes(marker));

  function assertUpstreamHeaders(up) {
    assert.equal(up.method, "POST");
    assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_KEY}`, "the channel's key is sent upstream");
    const all = JSON.stringify(up.headers);
    assert.ok(!all.includes(s.key), "the relay key is never sent upstream");
    assert.match(up.headers["content-type"] ?? "", /application\/json/);
  }

  it("SDK non-stream: the upstream's answer; model rewritten; upstream key sent", async () => {
    const { marker, messages } = marked();
    const reply = await client.chat.completions.create({ model: "pub-chat", messages });
    assert.equal(reply.object, "chat.completion");
    assert.equal(reply.choices[0].message.content, CHAT_TEXT);
    assert.equal(reply.choices[0].finish_reason, "stop");
    assert.equal(reply.usage.prompt_tokens, CHAT_USAGE.prompt_tokens);
    assert.equal(reply.usage.completion_tokens, CHAT_USAGE.completion_tokens);
    assert.equal(reply.usage.total_tokens, CHAT_USAGE.total_tokens);
    const up = await upstreamOf(marker);
    assert.equal(up.path, "/v1/chat/completions");
    assert.equal(up.body.model, "gpt-test-up");
    assertUpstreamHeaders(up);
  });

  it("unknown and optional body fields reach the upstream intact; only model changes", async () => {
    const { marker, messages } = marked();
    const body = {
      model: "pub-chat",
      messages: [{ role: "system", content: "Be brief.", name: "sys" }, ...messages],
      x_custom: { a: 1, nested: [1, "two", null, { deep: true }] },
      metadata: { tag: "e2e", n: "1" },
      temperature: 0.25,
      top_p: 1,
      max_completion_tokens: 50,
      user: "user-123",
      seed: 42,
      tools: [{ type: "function", function: { name: "f", description: "d", parameters: { type: "object", properties: {} } } }],
      response_format: { type: "text" },
      unicode: "héllo ✓ 😀",
    };
    const res = await relay.call("/v1/chat/completions", { key: s.key, body });
    assert.equal(res.status, 200, await res.clone().text());
    const up = await upstreamOf(marker);
    assert.deepEqual(up.body, { ...body, model: "gpt-test-up" });
    assertUpstreamHeaders(up);
  });

  it("SDK stream with include_usage: content chunks and the usage chunk reach the client", async () => {
    const { marker, messages } = marked();
    const stream = await client.chat.completions.create({
      model: "pub-chat",
      messages,
      stream: true,
      stream_options: { include_usage: true },
      x_custom: { a: 1 },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? "").join("");
    assert.equal(text, CHAT_STREAM_PIECES.join(""));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, CHAT_STREAM_USAGE.prompt_tokens);
    assert.equal(last.usage.completion_tokens, CHAT_STREAM_USAGE.completion_tokens);
    assert.equal(last.usage.total_tokens, CHAT_STREAM_USAGE.total_tokens);
    const up = await upstreamOf(marker);
    assert.equal(up.body.model, "gpt-test-up");
    assert.equal(up.body.stream, true);
    assert.deepEqual(up.body.stream_options, { include_usage: true });
    assert.deepEqual(up.body.x_custom, { a: 1 });
    assertUpstreamHeaders(up);
  });

  it("stream without include_usage: the relay asks upstream for usage, the client gets none, the row has the real counts", async () => {
    const { marker, messages } = marked();
    const body = { model: "pub-chat", messages, stream: true, metadata: { k: "v" } };
    const res = await relay.call("/v1/chat/completions", { key: s.key, body });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const id = requestId(res);
    const events = await sse(res);
    assert.equal(events.at(-1).data, "[DONE]", "[DONE] last");
    const chunks = sseJson(events).slice(0, -1);
    assert.ok(chunks.length >= CHAT_STREAM_PIECES.length);
    for (const c of chunks) {
      assert.ok(c.usage === undefined || c.usage === null, `no usage reaches the client: ${JSON.stringify(c)}`);
      assert.ok(Array.isArray(c.choices) && c.choices.length > 0, `no empty-choices chunk: ${JSON.stringify(c)}`);
    }
    assert.equal(chunks.map((c) => c.choices[0].delta?.content ?? "").join(""), CHAT_STREAM_PIECES.join(""));

    const up = await upstreamOf(marker);
    assert.equal(up.body.stream_options?.include_usage, true, "include_usage added upstream");
    const { stream_options, ...rest } = up.body;
    assert.deepEqual(rest, { ...body, model: "gpt-test-up" }, "nothing else changed");

    const row = await relay.usageRow(id);
    assert.equal(row.stream, 1);
    assert.equal(row.status, 200);
    assert.equal(row.prompt_tokens, CHAT_STREAM_USAGE.prompt_tokens);
    assert.equal(row.completion_tokens, CHAT_STREAM_USAGE.completion_tokens);
    assert.equal(row.total_tokens, CHAT_STREAM_USAGE.total_tokens);
    assert.equal(row.usage_source, "reported");
  });

  it("stream with include_usage: false behaves like no include_usage", async () => {
    const { marker, messages } = marked();
    const res = await relay.call("/v1/chat/completions", {
      key: s.key,
      body: { model: "pub-chat", messages, stream: true, stream_options: { include_usage: false } },
    });
    assert.equal(res.status, 200);
    const chunks = sseJson(await sse(res)).slice(0, -1);
    assert.ok(chunks.every((c) => !c.usage && c.choices.length > 0), "no usage chunk");
    const up = await upstreamOf(marker);
    assert.equal(up.body.stream_options?.include_usage, true);
  });

  it("streams are not buffered: the first chunk arrives before the upstream sends the rest", async () => {
    const { marker, messages } = marked();
    const res = await within(
      relay.call("/v1/chat/completions", { key: s.key, body: { model: "pub-slow", messages, stream: true } }),
      10_000,
      "response headers of a stream whose upstream is paused",
    );
    assert.equal(res.status, 200);
    const it = sseEvents(res);
    let released = false;
    try {
      // Read until the first content delta. The upstream is paused after it until release():
      // if the relay buffered, this would not resolve and the bound fails the test.
      let first;
      while (!first) {
        const { value, done } = await within(it.next(), 10_000, "first streamed chunk (relay buffering?)");
        assert.ok(!done, "stream ended before the first content chunk");
        if (value.data === "[DONE]") continue;
        const c = JSON.parse(value.data);
        if (c.choices?.[0]?.delta?.content) first = c;
      }
      assert.equal(first.choices[0].delta.content, CHAT_STREAM_PIECES[0]);
      const up = await upstreamOf(marker);
      assert.equal(up.scenario, "slow-stream");
      fake.release();
      released = true;
      const rest = [];
      for (;;) {
        const { value, done } = await within(it.next(), 10_000, "rest of the stream after release");
        if (done) break;
        rest.push(value);
      }
      assert.equal(rest.at(-1)?.data, "[DONE]");
      const text =
        first.choices[0].delta.content +
        sseJson(rest)
          .slice(0, -1)
          .map((c) => c.choices?.[0]?.delta?.content ?? "")
          .join("");
      assert.equal(text, CHAT_STREAM_PIECES.join(""));
    } finally {
      if (!released) fake.release(); // unblocks a pending read, so closing the iterator can finish
      await within(it.return(), 5_000, "closing the stream").catch(() => {});
    }
  });

  it("legacy completions via the SDK", async () => {
    const marker = `marker-${randomUUID()}`;
    const reply = await client.completions.create({ model: "pub-instruct", prompt: `Once upon (${marker})`, max_tokens: 5 });
    assert.equal(reply.object, "text_completion");
    assert.equal(reply.choices[0].text, " fake completion");
    assert.equal(reply.usage.total_tokens, 8);
    const up = await upstreamOf(marker);
    assert.equal(up.path, "/v1/completions");
    assert.equal(up.body.model, "instruct-fake");
    assert.equal(up.body.max_tokens, 5);
    assertUpstreamHeaders(up);
  });

  it("embeddings via the SDK (base64 by default, and float)", async () => {
    const marker = `marker-${randomUUID()}`;
    const r1 = await client.embeddings.create({ model: "pub-embed", input: [`a ${marker}`, "b"] });
    assert.equal(r1.object, "list");
    assert.equal(r1.data.length, 2);
    assert.equal(r1.data[0].embedding.length, EMBEDDING_DIM);
    assert.equal(r1.data[0].embedding[0], 0.125);
    assert.equal(r1.usage.prompt_tokens, 8);
    const up = await upstreamOf(marker);
    assert.equal(up.path, "/v1/embeddings");
    assert.equal(up.body.model, "text-embedding-fake");
    assert.deepEqual(up.body.input, [`a ${marker}`, "b"]);
    assert.equal(up.body.encoding_format, "base64");
    assertUpstreamHeaders(up);

    const r2 = await client.embeddings.create({ model: "pub-embed", input: "c", encoding_format: "float" });
    assert.deepEqual(r2.data[0].embedding.length, EMBEDDING_DIM);
    assert.equal(typeof r2.data[0].embedding[1], "number");
  });

  it("the key may also come in x-api-key", async () => {
    const { marker, messages } = marked();
    const res = await relay.call("/v1/chat/completions", {
      headers: { "x-api-key": s.key },
      body: { model: "pub-chat", messages },
    });
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).choices[0].message.content, CHAT_TEXT);
    const up = await upstreamOf(marker);
    assert.ok(!JSON.stringify(up.headers).includes(s.key), "the relay key is not forwarded");
    assert.equal(up.headers["x-api-key"], undefined);
  });
});
