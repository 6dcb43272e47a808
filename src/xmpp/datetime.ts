/** XEP-0082 DateTime in UTC to the second (CCYY-MM-DDThh:mm:ssZ), as the XEPs' examples write it. */
export const xmppDateTime = (at: Date | number): string => new Date(at).toISOString().replace(/\.\d{3}Z$/, "Z");
