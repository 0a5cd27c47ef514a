//! The text of `/help`. `/help <cmd>` shows the lines that start with that
//! command, so each command's line starts with it. chatd(8) documents each
//! one at length.

pub(super) const HELP: &[&str] = &[
    "commands (a line without / is said in your current room; // sends a line starting with /):",
    "/nick <name>            change your nick",
    "/join <#room>           join or create a room, and talk there",
    "/join new               create a private room with a random code",
    "/join <code>            join a private room by its code",
    "/part [#room]           leave a room (default: the current one)",
    "/rooms                  list public rooms",
    "/who [#room]            who is in a room",
    "/online                 who is online",
    "/dm <nick> <text>       send a direct message",
    "/me <action>            act in the current room (* alice waves)",
    "/topic [text]           show or set the room topic (/topic - clears it)",
    "/image [name] <base64>  send an image (PNG, JPEG, GIF, BMP, WebP)",
    "/file [name] <base64>   send any other file",
    "/history [#room] [n]    show the last n messages",
    "/register <password>    keep your nick: nobody else can use it",
    "/login <nick> <password> log in as a registered nick",
    "/whois <nick>           who someone is, where, since when",
    "/bio <text>             set your bio (registered nicks)",
    "/dms <nick>             your direct messages with someone (registered nicks)",
    "/key <nick>             the end-to-end key someone published (chatc uses it)",
    "/create <#room> [topic] own a room: it stays, and only you can delete it",
    "/delete <#room>         delete a room you own",
    "/set [name on|off]      settings: timestamps, echo, prompt (kept for accounts)",
    "/where                  which room your lines go to",
    "/search <text> [#room] [n] find kept lines, newest first",
    "/format machine|human   switch this session's line format",
    "/quit [reason]          leave (also /exit)",
];
