//! Who may do what: the roles of Label Studio's paid edition that Labelport
//! offers to everyone (`shared/reference/ls-users-roles.md` §6–7), reduced
//! to three. A user has one role on the server; project membership decides
//! which projects a manager or annotator sees. The route table that applies
//! them is `labelport-api`'s `access.rs`.

/// A user's role, weakest first (`Annotator < Manager < Admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Sees only projects they are a member of: their tasks, their media;
    /// labels them. No storage, import/export or project settings.
    Annotator,
    /// Creates projects (and becomes their member); manages the projects
    /// they are a member of: settings, tasks, storages, members.
    Manager,
    /// Everything, every project, user management, and storages that use
    /// the server's own cloud identity.
    Admin,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["admin", "manager", "annotator"];

    /// `admin` | `manager` | `annotator`, as stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Annotator => "annotator",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "annotator" => Some(Role::Annotator),
            _ => None,
        }
    }

    /// Label Studio's organization role code (`AD`, `MA`, `AN`).
    pub fn label_studio_code(self) -> &'static str {
        match self {
            Role::Admin => "AD",
            Role::Manager => "MA",
            Role::Annotator => "AN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_round_trip() {
        assert!(Role::Annotator < Role::Manager && Role::Manager < Role::Admin);
        for name in Role::NAMES {
            assert_eq!(Role::parse(name).map(Role::as_str), Some(name));
        }
        assert_eq!(Role::parse("owner"), None);
    }
}
