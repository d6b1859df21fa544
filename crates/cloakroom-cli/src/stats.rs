//! `stats`: counts over every live session.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use cloakroom::Timestamp;
use cloakroom::store::SessionStore;
use serde::Serialize;

use crate::StatsArgs;
use crate::render::{self, clean};
use crate::scan::{Progress, for_each_session};

/// Users listed in text mode (JSON lists them all).
const TOP_USERS: usize = 20;

/// What "expiring soon" means.
const SOON: Duration = Duration::from_secs(3600);

/// Totals of one scan.
#[derive(Debug, Default)]
struct Totals {
    count: u64,
    anonymous: u64,
    by_user: HashMap<String, u64>,
    expiring_soon: u64,
    data_bytes: u64,
}

impl Totals {
    fn average_data_bytes(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.data_bytes as f64 / self.count as f64
        }
    }

    /// Users by session count, most first (ties by name).
    fn users_by_count(&self) -> Vec<(&str, u64)> {
        let mut users: Vec<(&str, u64)> =
            self.by_user.iter().map(|(u, n)| (u.as_str(), *n)).collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        users
    }
}

/// `stats --json`.
#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    count: u64,
    logged_in: u64,
    anonymous: u64,
    /// Distinct users with sessions.
    users: usize,
    /// Every user, most sessions first.
    by_user: Vec<UserCount<'a>>,
    expiring_within_hour: u64,
    data_bytes: u64,
    average_data_bytes: f64,
}

#[derive(Debug, Serialize)]
struct UserCount<'a> {
    user: &'a str,
    count: u64,
}

/// `stats`: session count, sessions per user (the top 20 in text, all in JSON), anonymous
/// sessions, sessions expiring within the hour, total and average data bytes. Scans the
/// whole store.
///
/// # Errors
/// Store failures and output errors.
pub async fn stats(
    store: &dyn SessionStore,
    args: &StatsArgs,
    now: Timestamp,
    progress: &mut Progress,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let soon = now.plus(SOON);
    let mut totals = Totals::default();
    for_each_session(store, None, progress, |info| {
        totals.count += 1;
        totals.data_bytes += info.data_bytes as u64;
        if info.meta.expires_at <= soon {
            totals.expiring_soon += 1;
        }
        match info.meta.user {
            Some(user) => *totals.by_user.entry(user).or_default() += 1,
            None => totals.anonymous += 1,
        }
    })
    .await?;
    let users = totals.users_by_count();
    if args.json {
        let stats = StatsJson {
            count: totals.count,
            logged_in: totals.count - totals.anonymous,
            anonymous: totals.anonymous,
            users: users.len(),
            by_user: users
                .iter()
                .map(|&(user, count)| UserCount { user, count })
                .collect(),
            expiring_within_hour: totals.expiring_soon,
            data_bytes: totals.data_bytes,
            average_data_bytes: totals.average_data_bytes(),
        };
        return render::write_json(out, &stats);
    }
    let lines = [
        ("sessions", totals.count.to_string(), String::new()),
        (
            "  logged in",
            (totals.count - totals.anonymous).to_string(),
            format!("({})", render::count(users.len() as u64, "user")),
        ),
        ("  anonymous", totals.anonymous.to_string(), String::new()),
        (
            "expiring within 1h",
            totals.expiring_soon.to_string(),
            String::new(),
        ),
        (
            "data bytes",
            totals.data_bytes.to_string(),
            format!(
                "({}; {:.0} bytes per session)",
                render::bytes(totals.data_bytes),
                totals.average_data_bytes()
            ),
        ),
    ];
    let width = lines.iter().map(|(_, n, _)| n.len()).max().unwrap_or(0);
    for (label, number, note) in &lines {
        let line = format!("{label:<20}{number:>width$}  {note}");
        writeln!(out, "{}", line.trim_end())?;
    }
    if !users.is_empty() {
        let shown = &users[..users.len().min(TOP_USERS)];
        writeln!(out)?;
        if users.len() > TOP_USERS {
            writeln!(out, "top {TOP_USERS} of {} users by sessions:", users.len())?;
        } else {
            writeln!(out, "users by sessions:")?;
        }
        let names: Vec<String> = shown.iter().map(|(user, _)| clean(user)).collect();
        let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let count_width = shown
            .iter()
            .map(|(_, n)| n.to_string().len())
            .max()
            .unwrap_or(0);
        for (name, (_, n)) in names.iter().zip(shown) {
            let pad = name_width - name.chars().count();
            writeln!(out, "  {name}{:pad$}  {n:>count_width$}", "")?;
        }
    }
    Ok(())
}
