//! The HTTP API on a real TCP server, on SQLite and PostgreSQL: the examples
//! run to their documented results, and bad input always gets a problem.
//! One file per resource; `support` holds the server and its client.

mod children;
mod events;
mod executions;
mod logs;
mod metrics;
mod model_tools;
mod models;
mod people;
mod recovery;
mod retention;
mod seed_tools;
mod stored;
mod support;
mod system;
mod tokens;
mod tools;
mod webhooks;
