/** The modules a server loads unless the config disables them, in no particular order (dependencies sort them). */
import type { Module } from "../module.js";
import { disco } from "./disco.js";
import { ping } from "./ping.js";
import { version } from "./version.js";
import { time } from "./time.js";
import { roster } from "./roster.js";
import { presence } from "./presence.js";
import { message } from "./message.js";
import { offline } from "./offline.js";
import { last } from "./last.js";
import { vcard } from "./vcard.js";
import { privateXml } from "./private.js";
import { register } from "./register.js";
import { carbons } from "./carbons.js";
import { blocking } from "./blocking.js";
import { mam } from "./mam.js";
import { csi } from "./csi.js";
import { caps } from "./caps.js";
import { pep } from "./pep.js";
import { extdisco } from "./extdisco.js";
import { adhoc } from "./adhoc.js";
import { avatars } from "./avatars.js";
import { bookmarks } from "./bookmarks.js";
import { upload } from "./upload.js";
import { push } from "./push.js";
import { appserver } from "./appserver.js";
import { muc } from "./muc/index.js";
import { admin } from "./admin.js";
import { devices } from "./devices.js";

export const defaultModules: readonly Module<any>[] = [
  disco, ping, version, time, roster, presence, message, offline, last, vcard, privateXml, register, carbons, blocking, mam, csi, caps, pep, extdisco, adhoc, avatars, bookmarks, upload, push, appserver, muc, admin, devices,
];
