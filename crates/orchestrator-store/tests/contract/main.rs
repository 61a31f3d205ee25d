//! One contract, both backends: every case runs on SQLite and on PostgreSQL
//! (`for_each_backend!`), one file per part of the store.

mod children;
mod executions;
mod finish;
mod memory;
mod models;
mod overview;
mod queue;
mod recovery;
mod resolve;
mod retention;
mod support;
mod tokens;
mod waits;
mod webhooks;
