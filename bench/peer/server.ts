// The bench's yardstick (bench/run.py): the core of outreach's public submit and subscribe
// written as plainly as Bun allows — parse the JSON body, check its fields, make a Snowflake
// id, one INSERT … RETURNING — so the service's rates can be read as a ratio to it.
// Not a second implementation of the service: no idempotency, events, logs or metrics.
import { SQL } from "bun";

const port = Number(process.env.PORT ?? "3411");
const sql = new SQL(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres", {
  max: Number(process.env.DB_POOL_SIZE ?? "10"),
});

// Snowflake: 41 bits of ms since 2024-01-01, 10 bits of worker id, 12 bits of sequence.
const EPOCH = 1704067200000;
const WORKER = BigInt(Number(process.env.WORKER_ID ?? "1001") & 1023);
let lastMs = 0;
let seq = 0;
function nextId(): bigint {
  let now = Date.now();
  if (now === lastMs) {
    seq = (seq + 1) & 4095;
    if (seq === 0) while ((now = Date.now()) <= lastMs);
  } else {
    seq = 0;
  }
  lastMs = now;
  return (BigInt(now - EPOCH) << 22n) | (WORKER << 12n) | BigInt(seq);
}

const EMAIL = /^[^\s@]{1,64}@[^\s@]+\.[^\s@]+$/;
const JSON_HEADERS = { "Content-Type": "application/json" };

function problem(status: number, detail: string): Response {
  return new Response(JSON.stringify({ status, detail }), {
    status,
    headers: { "Content-Type": "application/problem+json" },
  });
}

function text(v: unknown, max: number): string | null {
  return typeof v === "string" && v.trim().length > 0 && v.length <= max ? v : null;
}

function optional(v: unknown, max: number): string | null {
  return typeof v === "string" && v.length <= max ? v : null;
}

async function body(req: Request): Promise<Record<string, unknown> | Response> {
  if (!(req.headers.get("content-type") ?? "").startsWith("application/json")) {
    return problem(415, "Send the body as application/json");
  }
  try {
    const parsed = await req.json();
    return parsed && typeof parsed === "object" ? parsed : problem(422, "not an object");
  } catch {
    return problem(400, "The body is not valid JSON");
  }
}

async function submit(req: Request, server: Bun.Server): Promise<Response> {
  const b = await body(req);
  if (b instanceof Response) return b;
  const name = text(b.name, 120);
  const email = typeof b.email === "string" && EMAIL.test(b.email) ? b.email.toLowerCase() : null;
  const message = text(b.message, 5000);
  if (name === null || email === null || message === null) {
    return problem(422, "The request has invalid fields");
  }
  const id = nextId();
  const ip = server.requestIP(req)?.address ?? null;
  const [row] = await sql`
    INSERT INTO peer_inquiries
      (id, name, email, phone, subject, message, source, status, client_ip, user_agent, created_at)
    VALUES (${id}, ${name}, ${email}, ${optional(b.phone, 32)}, ${optional(b.subject, 200)},
            ${message}, ${optional(b.source, 2048)}, 'SENT', ${ip},
            ${req.headers.get("user-agent")}, now())
    RETURNING id, created_at`;
  return new Response(
    JSON.stringify({ id: String(row.id), status: "SENT", createdAt: row.created_at.toISOString() }),
    { status: 201, headers: JSON_HEADERS },
  );
}

const ACCEPTED = JSON.stringify({ status: "ACCEPTED" });

async function subscribe(req: Request): Promise<Response> {
  const b = await body(req);
  if (b instanceof Response) return b;
  const email = typeof b.email === "string" && EMAIL.test(b.email) ? b.email.toLowerCase() : null;
  if (email === null) return problem(422, "The request has invalid fields");
  await sql`
    INSERT INTO peer_subscribers (id, email, name, source, status, created_at, updated_at)
    VALUES (${nextId()}, ${email}, ${optional(b.name, 120)}, ${optional(b.source, 2048)},
            'ACTIVE', now(), now())
    ON CONFLICT (email) DO UPDATE SET status = 'ACTIVE', updated_at = now()
    RETURNING id`;
  return new Response(ACCEPTED, { status: 202, headers: JSON_HEADERS });
}

Bun.serve({
  port,
  hostname: "127.0.0.1",
  routes: {
    "/submit": { POST: submit },
    "/subscribe": { POST: subscribe },
    "/healthz": new Response('{"status":"ok"}', { headers: JSON_HEADERS }),
  },
  fetch: () => problem(404, "Not found"),
});
console.log(`peer listening on ${port}`);
