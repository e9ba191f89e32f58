-- The peer's own tables (its own database, made by bench/run.py): the columns submit and
-- subscribe write, a primary key and the subscribers' unique address; no triggers.
CREATE TABLE IF NOT EXISTS peer_inquiries (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  phone text,
  subject text,
  message text NOT NULL,
  source text,
  status text NOT NULL,
  client_ip text,
  user_agent text,
  created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_subscribers (
  id bigint PRIMARY KEY,
  email text NOT NULL UNIQUE,
  name text,
  source text,
  status text NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
TRUNCATE peer_inquiries, peer_subscribers;
