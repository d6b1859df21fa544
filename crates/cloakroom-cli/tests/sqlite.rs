//! The `cloakroom` binary against a SQLite store file filled through the library. The
//! scenarios live in `common` so other stores (Redis) can run them too.

mod common;

/// A fresh, empty SQLite store in a temporary directory; the URL lives as long as the guard.
fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("sessions.db").display());
    (url, dir)
}

macro_rules! sqlite_scenarios {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            let (url, _dir) = sqlite_url();
            common::$scenario(&url).await;
        }
    )*};
}

sqlite_scenarios!(
    list_json_matches_the_store,
    list_of_a_user_has_only_theirs,
    list_prints_a_table,
    show_decodes_the_data_and_hides_the_csrf_secret,
    show_of_an_unknown_handle_fails,
    revoke_deletes_one_session,
    handles_starting_with_a_hyphen_work,
    revoke_of_a_user_deletes_all_theirs,
    revoke_with_a_reason_tells_the_user,
    events_show_revocations_as_they_happen,
    stats_match_the_store,
    gc_removes_expired_sessions,
    the_store_can_come_from_the_environment,
    terminal_control_characters_are_escaped,
    bidi_and_invisible_characters_are_escaped,
    sealed_data_opens_only_with_the_ticket,
);
